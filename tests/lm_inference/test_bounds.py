import jax
import numpy as np
import pytest

from lm_inference import exact
from lm_inference.bounds import bidirectional_bounds, rejection_samples
from lm_inference.twist_training import train_twist
from lm_inference.twisted_smc import smc, teacher_force
from tests.lm_inference._tiny import tiny

R = 192  # runs: enough power for the gap comparison (z > 4) below


@pytest.fixture(scope="module")
def setup():
    target, en = tiny(True)
    ex = exact.exact_samples(jax.random.key(11), en, R)
    ctl = train_twist(jax.random.key(12), target, "ctl", num_steps=150, progress=False).twist
    b0 = bidirectional_bounds(jax.random.key(13), target, ex, 4, num_kl_samples=4096)
    b1 = bidirectional_bounds(jax.random.key(13), target, ex, 4, twist=ctl, num_kl_samples=4096)
    return target, en, ex, ctl, b0, b1


def test_bounds_bracket_log_Z(setup):
    target, en, ex, ctl, b0, b1 = setup
    c = np.log(2 * R / 0.01)  # distribution-free, alpha = 0.01
    log_z = float(en.log_Z)
    for b in (b0, b1):
        for lo, up in ((b.lower, b.upper), (b.iwae_lower, b.iwae_upper)):
            assert lo.values.max() <= log_z + c
            assert up.values.min() >= log_z - c
            # in expectation: E[L] <= log Z <= E[U]
            se_l = lo.values.std(ddof=1) / np.sqrt(R)
            se_u = up.values.std(ddof=1) / np.sqrt(R)
            assert (lo.mean - log_z) / max(se_l, 1e-9) < 4  # z-score
            assert (log_z - up.mean) / max(se_u, 1e-9) < 4  # z-score
    # without a twist the sandwich is not degenerate: a real test
    assert b0.gap > 0.02


def test_ctl_shrinks_gap(setup):
    """Paired comparison: both bound sets use the same keys and references, run by run."""
    *_, b0, b1 = setup
    d0 = b0.upper.values - b0.lower.values
    d1 = b1.upper.values - b1.lower.values
    se = (d0 - d1).std(ddof=1) / np.sqrt(R)
    assert (d0.mean() - d1.mean()) / se > 4  # z-score: the CTL gap is smaller
    assert d1.mean() < 0.5 * d0.mean()


@pytest.mark.parametrize("which", [0, 1])
def test_kl_intervals_contain_exact_kls(setup, which):
    target, en, ex, ctl, b0, b1 = setup
    twist, b = (None, b0) if which == 0 else (ctl, b1)
    kl_qs, kl_sq = exact.exact_kls(target, twist, en)
    # Monte Carlo error of the interval ends: f_q, g_q and the mean bounds
    q = smc(jax.random.key(14), target, 4096, twist=twist, ess_threshold=0.0).samples
    se_f = np.std(np.asarray(teacher_force(target, q, twist).log_weight())) / np.sqrt(4096)
    se_g = np.std(np.asarray(teacher_force(target, ex, twist).log_weight())) / np.sqrt(R)
    se_l = b.lower.values.std(ddof=1) / np.sqrt(R)
    se_u = b.upper.values.std(ddof=1) / np.sqrt(R)
    m1 = 4 * np.hypot(se_f, max(se_l, se_u))  # 4 sigma
    m2 = 4 * np.hypot(se_g, max(se_l, se_u))
    assert b.kl_q_sigma[0] - m1 <= kl_qs <= b.kl_q_sigma[1] + m1
    assert b.kl_sigma_q[0] - m2 <= kl_sq <= b.kl_sigma_q[1] + m2
    if which == 0:
        assert kl_qs > 0.1 and m1 < 0.3  # the margin does not swamp the check


def test_rejection_samples_match_sigma():
    target, en = tiny(True)
    s = rejection_samples(jax.random.key(15), target, 4000, batch=4096)
    codes = np.asarray(s) @ (4 ** np.arange(2, -1, -1))
    en_codes = np.asarray(en.sequences) @ (4 ** np.arange(2, -1, -1))
    p = np.exp(np.asarray(en.log_sigma, np.float64))
    counts = np.array([(codes == c).sum() for c in en_codes])
    keep = p * 4000 > 5
    from scipy import stats

    chi2 = ((counts[keep] - 4000 * p[keep]) ** 2 / (4000 * p[keep])).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3  # chi-square p-value


def test_errors():
    target, en = tiny(True)
    with pytest.raises(ValueError, match="exact_samples must have shape"):
        bidirectional_bounds(jax.random.key(0), target, np.zeros((4, 2), int), 4)
    with pytest.raises(ValueError, match="num_runs"):
        bidirectional_bounds(jax.random.key(0), target, en.sequences[:2], 4, num_runs=5)
