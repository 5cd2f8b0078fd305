import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lm_inference import exact
from lm_inference.twisted_smc import smc
from tests.lm_inference._tiny import tiny


@pytest.mark.parametrize("eos", [True, False])
def test_optimal_twist_gives_exact_log_Z_every_run(eos):
    target, en = tiny(eos)
    tw = exact.optimal_twist(target, en)
    keys = jax.random.split(jax.random.key(1), 8)
    for thr in (0.0, 0.5, 1.0):
        lz = jax.vmap(lambda k, thr=thr: smc(k, target, 16, twist=tw, ess_threshold=thr).log_Z)(
            keys
        )
        np.testing.assert_allclose(lz, en.log_Z, atol=2e-5)  # zero variance
        ref = en.sequences[5]
        lz = jax.vmap(
            lambda k, thr=thr, ref=ref: (
                smc(k, target, 16, tw, ess_threshold=thr, reference=ref).log_Z
            )
        )(keys)
        np.testing.assert_allclose(lz, en.log_Z, atol=2e-5)


def test_optimal_twist_samples_are_exact_with_eos():
    target, en = tiny(True)
    tw = exact.optimal_twist(target, en)
    r = smc(jax.random.key(2), target, 20000, twist=tw, ess_threshold=0.0)
    codes = np.asarray(r.samples) @ (4 ** np.arange(2, -1, -1))
    en_codes = np.asarray(en.sequences) @ (4 ** np.arange(2, -1, -1))
    counts = np.array([(codes == c).sum() for c in en_codes])
    assert counts.sum() == 20000  # every sample is a valid EOS-padded sequence
    expected = 20000 * np.exp(np.asarray(en.log_sigma, np.float64))
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3  # chi-square p-value


@pytest.mark.parametrize(
    "scheme,thr", [("systematic", 0.5), ("multinomial", 1.0), ("residual", 0.0)]
)
def test_no_twist_Z_hat_unbiased(scheme, thr):
    target, en = tiny(True)
    keys = jax.random.split(jax.random.key(3), 4000)
    lz = jax.vmap(lambda k: smc(k, target, 4, resampling=scheme, ess_threshold=thr).log_Z)(keys)
    ratio = np.exp(np.asarray(lz, np.float64) - float(en.log_Z))
    z = (ratio.mean() - 1) / (ratio.std() / np.sqrt(ratio.size))
    assert abs(z) < 4  # z-score
    assert ratio.std() > 0.05  # a real Monte Carlo check (not degenerate)


def test_conditional_smc_inverse_unbiased():
    """E_sigma-CSMC[1 / Z_hat] = 1 / Z when the reference is an exact target sample."""
    target, en = tiny(True)
    refs = exact.exact_samples(jax.random.key(4), en, 4000)
    keys = jax.random.split(jax.random.key(5), 4000)
    lz = jax.vmap(lambda k, r: smc(k, target, 4, reference=r).log_Z)(keys, refs)
    inv = np.exp(float(en.log_Z) - np.asarray(lz, np.float64))
    z = (inv.mean() - 1) / (inv.std() / np.sqrt(inv.size))
    assert abs(z) < 4  # z-score


def test_reference_is_kept_and_ess_recorded():
    target, en = tiny(True)
    ref = en.sequences[7]
    r = smc(jax.random.key(6), target, 8, reference=ref, ess_threshold=1.0)
    np.testing.assert_array_equal(r.samples[0], ref)
    assert r.ess.shape == (3,) and r.resampled.shape == (3,)
    assert bool(r.resampled[0]) and not bool(r.resampled[-1])
    assert np.all((r.ess >= 1 - 1e-4) & (r.ess <= 8 + 1e-4))


def test_errors():
    target, _ = tiny(True)
    with pytest.raises(ValueError, match="num_particles"):
        smc(jax.random.key(0), target, 0)
    with pytest.raises(ValueError, match="unknown resampling"):
        smc(jax.random.key(0), target, 4, resampling="bogus")
    with pytest.raises(ValueError, match="ess_threshold"):
        smc(jax.random.key(0), target, 4, ess_threshold=2.0)
    with pytest.raises(ValueError, match="reference must have shape"):
        smc(jax.random.key(0), target, 4, reference=jnp.zeros(5, jnp.int32))
    with pytest.raises(TypeError, match="Target"):
        smc(jax.random.key(0), "target", 4)


def test_conditional_smc_uses_the_exact_conditional_schemes():
    """Regression: wrapping a scheme (e.g. ``functools.partial(systematic, check=False)``) made
    ``resampling.conditional`` fall back to ``A_0 = 0`` plus the plain scheme on ``N - 1``
    points, which is not systematic resampling's conditional law (E[1 / Z_hat] != 1 / Z)."""
    from kernels.smc import resampling
    from lm_inference import twisted_smc as ts

    exact = {
        "multinomial": resampling.conditional_multinomial,
        "systematic": resampling.conditional_systematic,
        "stratified": resampling.conditional_stratified,
        "residual": resampling.conditional_residual,
    }
    for name, scheme in exact.items():
        assert ts._conditional(ts._SCHEMES[name]) is scheme
