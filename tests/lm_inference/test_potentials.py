import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lm_inference import exact, potentials
from lm_inference.tabular import TabularLM
from lm_inference.target import Target
from lm_inference.twisted_smc import smc
from tests.lm_inference._tiny import soft_potential, tiny


@pytest.fixture(scope="module")
def infill():
    lm = TabularLM(jax.random.key(7), vocab_size=4, scale=1.0)
    pot = potentials.infilling(lm, [0, 1], [2, 0])
    target = Target(lm, [0, 1], 2, pot, eos_token_id=-1)
    return target, exact.enumerate_target(target)


def test_infilling_potential_is_continuation_logprob(infill):
    target, en = infill
    lm = target.lm
    # Z = p0(continuation | prompt), marginally over the middle tokens
    ids = jnp.concatenate([jnp.array([[0, 1]] * 16), en.sequences, jnp.array([[2, 0]] * 16)], 1)
    lp = jax.nn.log_softmax(lm.logits(ids), -1)
    direct = lp[jnp.arange(16), 3, ids[:, 4]] + lp[jnp.arange(16), 4, ids[:, 5]]
    np.testing.assert_allclose(en.log_phi, direct, atol=1e-5)


def test_joint_sampling_trick_is_exact(infill):
    target, en = infill
    s = potentials.infilling_joint_samples(jax.random.key(8), target, 3000)
    codes = np.asarray(s) @ np.array([4, 1])
    en_codes = np.asarray(en.sequences) @ np.array([4, 1])
    p = np.exp(np.asarray(en.log_sigma, np.float64))
    counts = np.array([(codes == c).sum() for c in en_codes])
    keep = 3000 * p > 5
    chi2 = ((counts[keep] - 3000 * p[keep]) ** 2 / (3000 * p[keep])).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3  # chi-square p-value


def test_host_callback_equals_jax_potential():
    target, en = tiny(True)
    host = potentials.host(lambda s: -1.0 * np.sum(s != 2) + (0.0 if s[0] == 1 else -2.0))
    t2 = Target(target.lm, target.prompt_ids, 3, host)
    r1 = smc(jax.random.key(9), target, 16)
    r2 = smc(jax.random.key(9), t2, 16)
    np.testing.assert_allclose(r1.log_potential, r2.log_potential)
    np.testing.assert_allclose(r1.log_Z, r2.log_Z, rtol=1e-6)
    # text version through a decode function
    host_txt = potentials.host(lambda text: -float(len(text)), decode=lambda ids: "x" * len(ids))
    assert float(host_txt(jnp.array([1, 2, 0]))) == -3.0


def test_composition_and_events():
    s = jnp.array([1, 2, 2])
    both = potentials.product(soft_potential, potentials.contains_token(1))
    assert float(both(s)) == float(soft_potential(s))
    assert float(potentials.product(soft_potential, potentials.ends_with(0))(s)) == -np.inf
    assert float(potentials.tempered(soft_potential, 0.5)(jnp.array([0, 0, 0]))) == -2.5
    thr = potentials.threshold(lambda s: jnp.sum(s), 4.0)
    assert float(thr(s)) == 0.0 and float(thr(jnp.array([0, 0, 1]))) == -np.inf
    soft = potentials.threshold(lambda s: jnp.sum(s), 4.0, soft=1.0)
    assert float(soft(s)) < 0.0


def test_indicator_log_Z_matches_enumeration():
    target, en = tiny(True)
    t = Target(target.lm, target.prompt_ids, 3, potentials.contains_token(2))
    en2 = exact.enumerate_target(t)
    lz = jax.vmap(lambda k: smc(k, t, 8).log_Z)(jax.random.split(jax.random.key(10), 2000))
    ratio = np.exp(np.asarray(lz, np.float64) - float(en2.log_Z))
    assert abs((ratio.mean() - 1) / (ratio.std() / np.sqrt(ratio.size))) < 4  # z-score


def test_infilling_errors():
    lm = TabularLM(jax.random.key(7), vocab_size=4)
    with pytest.raises(ValueError, match="continuation"):
        potentials.infilling(lm, [0], [])
    target, _ = tiny(True)
    with pytest.raises(ValueError, match="not infilling"):
        potentials.infilling_joint_samples(jax.random.key(0), target, 3)
