import jax
import numpy as np
import pytest

from lm_inference import exact
from lm_inference.twist_training import METHODS, train_twist
from lm_inference.twists import head_twist
from tests.lm_inference._tiny import tiny


@pytest.mark.parametrize("method", METHODS)
def test_every_method_reduces_kl(method):
    target, en = tiny(True)
    _, kl0 = exact.exact_kls(target, None, en)
    res = train_twist(jax.random.key(21), target, method, num_steps=150, progress=False)
    kl_qs, kl_sq = exact.exact_kls(target, res.twist, en)
    assert np.all(np.isfinite(res.losses))
    assert kl_sq < 0.7 * kl0, (method, kl_sq, kl0)  # exact KL(sigma || q): deterministic


def test_ctl_with_exact_samples_and_linear_head():
    target, en = tiny(True)
    ex = exact.exact_samples(jax.random.key(22), en, 512)
    res = train_twist(
        jax.random.key(23),
        target,
        "ctl",
        num_steps=150,
        exact_samples=ex,
        kind="linear",
        progress=False,
    )
    _, kl0 = exact.exact_kls(target, None, en)
    assert exact.exact_kls(target, res.twist, en)[1] < 0.3 * kl0


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    target, _ = tiny(True)
    tw = head_twist(jax.random.key(0), target.lm.hidden_size, 4, 3)
    full = train_twist(jax.random.key(24), target, twist=tw, num_steps=20, progress=False)
    ck = tmp_path / "twist.safetensors"
    part = train_twist(
        jax.random.key(24), target, twist=tw, num_steps=10, checkpoint=ck, progress=False
    )
    assert ck.exists() and part.losses.size == 10
    resumed = train_twist(
        jax.random.key(24), target, twist=tw, num_steps=20, checkpoint=ck, progress=False
    )
    assert resumed.losses.size == 10
    for a, b in zip(
        jax.tree.leaves(full.twist.params), jax.tree.leaves(resumed.twist.params), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_errors():
    target, _ = tiny(True)
    with pytest.raises(ValueError, match="unknown method"):
        train_twist(jax.random.key(0), target, "bogus")


def test_resume_for_another_target_raises(tmp_path):
    """Resuming a checkpoint for another potential, T, model or method raises instead of
    continuing (or, past num_steps, silently returning) the other target's twist."""
    from lm_inference import potentials
    from lm_inference.tabular import TabularLM
    from lm_inference.target import Target
    from lm_inference.twists import TwistMismatchError, read_record

    target, _ = tiny(True)
    ck = tmp_path / "twist.safetensors"
    kw = dict(num_steps=2, batch_size=8, checkpoint=ck, progress=False)
    train_twist(jax.random.key(0), target, **kw)
    rec = read_record(ck)
    assert rec["num_tokens"] == 3 and rec["extra"] == {"method": "ctl"}
    other_phi = Target(target.lm, [0, 1], 3, potentials.contains_token(2))
    with pytest.raises(TwistMismatchError, match="potential: trained for") as e:
        train_twist(jax.random.key(0), other_phi, **kw)
    assert "resuming would continue" in str(e.value) and str(ck) in str(e.value)
    with pytest.raises(TwistMismatchError, match=r"T \(num_tokens\): trained for 3"):
        train_twist(jax.random.key(0), Target(target.lm, [0, 1], 2, target.log_potential), **kw)
    lm2 = TabularLM(jax.random.key(5), vocab_size=4, eos_token_id=3)
    with pytest.raises(TwistMismatchError, match="different weights"):
        train_twist(jax.random.key(0), Target(lm2, [0, 1], 3, target.log_potential), **kw)
    with pytest.raises(TwistMismatchError, match="method: trained with 'ctl', requested 'sixo'"):
        train_twist(jax.random.key(0), target, "sixo", **kw)
    # the same target: resuming a finished run trains nothing, and says so
    with pytest.warns(UserWarning, match="nothing to train"):
        res = train_twist(jax.random.key(0), target, **kw)
    assert res.losses.size == 0


def test_fudge_twist_is_a_probability_and_reloads_as_trained(tmp_path):
    """FUDGE's psi_t estimates P(phi = 1 | s_1:t) <= 1. A loss that clipped log psi at 0 but let
    the gradient through drove log psi far above 0 on prefixes whose every label is 1 (the
    issue's +15): on this indicator target the old loss gave max log psi = +538.8 (negative
    control, run once by hand with the same seeds). The checkpoint reloads (load_twist, also
    with a head passed as the CLI does) as the same function."""
    import jax.numpy as jnp

    from lm_inference import twisted_smc
    from lm_inference.tabular import TabularLM
    from lm_inference.target import Target
    from lm_inference.twists import load_twist

    lm = TabularLM(jax.random.key(0), vocab_size=4, eos_token_id=3)
    target = Target(lm, [0, 1], 3, lambda s: jnp.where(jnp.any(s == 1), 0.0, -jnp.inf))
    ck = tmp_path / "fudge.safetensors"
    res = train_twist(jax.random.key(24), target, "fudge", num_steps=60, learning_rate=0.03,
                      checkpoint=ck, progress=False)
    samples = twisted_smc.smc(jax.random.key(25), target, 64, ess_threshold=0.0).samples
    lpsi = np.asarray(twisted_smc.teacher_force(target, samples, res.twist).log_psi)
    assert np.all(lpsi <= 0.0), lpsi.max()
    for head in (None, head_twist(jax.random.key(0), lm.hidden_size, lm.vocab_size, 3)):
        back = load_twist(ck, target, twist=head)
        again = np.asarray(twisted_smc.teacher_force(target, samples, back).log_psi)
        np.testing.assert_allclose(again, lpsi, atol=1e-6)


def test_probability_twist_is_idempotent_without_a_spec():
    import jax.numpy as jnp

    from lm_inference.twists import Twist, probability_twist

    tw = Twist(lambda p, h, tok, t: jnp.full((1, 4), p), jnp.float32(2.0))  # no .spec
    once, twice = probability_twist(tw), probability_twist(probability_twist(tw))
    args = (jnp.zeros((1, 3)), jnp.zeros((1, 3), jnp.int32), 0)
    np.testing.assert_allclose(twice.apply(twice.params, *args), once.apply(once.params, *args))
    np.testing.assert_allclose(once.apply(once.params, *args), np.log(1 / (1 + np.exp(-2.0))),
                               rtol=1e-6)
