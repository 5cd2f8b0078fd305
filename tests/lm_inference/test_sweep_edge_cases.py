"""The sweep's handling of dead particles, bad potential outputs and prompts as arguments."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_inference import potentials
from lm_inference.potentials import PotentialError
from lm_inference.target import Target
from lm_inference.twisted_smc import smc, teacher_force
from lm_inference.twists import Twist
from tests.lm_inference._text import text_lm
from tests.lm_inference._tiny import tiny


def _masking_twist(v):
    """``-inf`` for every next token of particles whose first token is 0 (after step 0)."""

    def apply(params, hidden, tokens, t):
        kill = (t > 0) & (tokens[:, 0] == 0)
        return jnp.where(kill[:, None], -jnp.inf, jnp.zeros((tokens.shape[0], v)))

    return Twist(apply, None)


def test_twist_masking_one_particle_gives_weight_zero_not_nan():
    target, en = tiny(True)
    for seed in range(5):
        r = smc(jax.random.key(seed), target, 8, twist=_masking_twist(4), ess_threshold=0.0)
        lw = np.asarray(r.log_weights)
        assert not np.isnan(lw).any() and not np.isnan(float(r.log_Z))
        assert int(np.asarray(r.samples).max()) < 4  # never the out-of-range id V
        dead = np.asarray(r.samples)[:, 0] == 0
        assert np.all(lw[dead] == -np.inf) and np.all(np.isfinite(lw[~dead]))


def test_all_dead_gives_minus_inf_and_warning():
    lm = text_lm(0)
    target = Target(lm, [0], 2, potentials.regex(lm, r"aaaaaaaa"))
    with pytest.warns(RuntimeWarning, match="every particle died"):
        r = smc(jax.random.key(0), target, 8)
    assert float(r.log_Z) == -np.inf and not np.isnan(np.asarray(r.log_weights)).any()
    assert int(np.asarray(r.samples).max()) < lm.vocab_size


@pytest.mark.parametrize(
    "fn,match",
    [
        (lambda s: jnp.any(s == 1), "returned bool"),
        (lambda s: jnp.sum(s), "returned int32"),
        (lambda s: jnp.zeros(s.shape), r"shape \[3\], expected \[\]"),
        (lambda s: jnp.where(s[0] == 0, jnp.nan, 0.0), "NaN"),
        (lambda s: jnp.where(s[0] == 0, jnp.inf, 0.0), r"\+inf"),
    ],
)
def test_bad_potential_outputs_raise_clear_errors(fn, match):
    target, _ = tiny(True)
    bad = Target(target.lm, target.prompt_ids, 3, fn)
    with pytest.raises(PotentialError, match=match):
        smc(jax.random.key(0), bad, 64)
    with pytest.raises(PotentialError, match=match):
        teacher_force(bad, jnp.zeros((4, 3), jnp.int32))


def test_reference_and_sequences_outside_vocabulary_are_rejected():
    target, _ = tiny(True)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        smc(jax.random.key(0), target, 4, reference=jnp.array([0, 1, 9]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        teacher_force(target, jnp.array([[0, -1, 2]]))


def test_new_prompt_of_same_length_does_not_recompile():
    lm = text_lm(0)
    pot = potentials.regex(lm, r"(a|b)+\.?")
    a = Target(lm, [0, 1], 3, pot)
    smc(jax.random.key(0), a, 8)
    (fn,) = pot.__dict__["_twisted_smc_fns"]["smc"].values()
    before = fn._cache_size()
    for prompt in ([2, 0], [1, 1], [5, 3]):
        smc(jax.random.key(1), Target(lm, prompt, 3, pot), 8)
    assert fn._cache_size() == before == 1
    smc(jax.random.key(1), Target(lm, [1, 1, 1], 3, pot), 8)  # another length: one new trace
    assert fn._cache_size() == 2


@pytest.mark.parametrize("defer", [True, False])
def test_defer_eos_keeps_final_weights_and_is_unbiased(defer):
    from lm_inference import exact
    from tests.lm_inference.potentials._common import z_unbiased

    lm = text_lm(0)
    target = Target(lm, [0], 4, potentials.regex(lm, r"(a|b)+( a)?\.?"))
    log_Z = float(exact.enumerate_target(target).log_Z)
    a = smc(jax.random.key(3), target, 16, ess_threshold=0.0, defer_eos=defer)
    b = smc(jax.random.key(3), target, 16, ess_threshold=0.0, defer_eos=not defer)
    np.testing.assert_allclose(a.log_weights, b.log_weights, rtol=1e-5)  # same final weights
    z = z_unbiased(target, 4, 2000, 4 + defer, log_Z, ess_threshold=1.0, defer_eos=defer)
    assert abs(z) < 4  # z-score
