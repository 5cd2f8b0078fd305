"""TVO bounds and moment / length-spaced schedules on a Gaussian path with closed forms.

pi_0 = N(0, I_2), L(x) = N(y; x, s^2 I), y = (2.5, -1): pi_beta = N(m_beta, v_beta I) with
v_beta = 1 / (1 + beta / s^2), m_beta = beta y v_beta / s^2, and
eta(beta) = E[log L] = sum_i -log(2 pi s^2)/2 - ((y_i - m_beta,i)^2 + v_beta) / (2 s^2).
"""

import functools

import blackjax
import jax
import numpy as np
from scipy.stats import norm

from kernels.smc import annealing, thermodynamic

D, S = 2, 0.5
Y = np.array([2.5, -1.0])
LOG_Z = float(np.sum(norm.logpdf(Y, 0.0, np.sqrt(1 + S**2))))
PARAMS = dict(step_size=0.4, inverse_mass_matrix=np.ones(D), num_integration_steps=4)


def eta(beta):
    """Closed-form ``E_{pi_beta}[log L]`` and ``Var_{pi_beta}[log L]``, vectorized in beta."""
    b = np.asarray(beta, np.float64)[..., None]
    v = 1 / (1 + b / S**2)
    mu = Y - b * Y * v / S**2  # E[y - x]
    m = np.sum(-0.5 * np.log(2 * np.pi * S**2) - (mu**2 + v) / (2 * S**2), -1)
    var = np.sum((2 * v**2 + 4 * mu**2 * v) / (4 * S**4), -1)
    return m, var


def se(a):
    return np.std(a, ddof=1) / np.sqrt(np.size(a))


def test_tvo_brackets_log_z_with_exact_moments():
    """Exact moments: TVO_L <= log Z <= TVO_U for every K, K = 1 is (ELBO, EUBO), both errors
    shrink with K, and the gap is (eta(1) - eta(0)) / K for a linear schedule."""
    with jax.enable_x64(True):
        _exact_moments()


def _exact_moments():
    errs = []
    for k in (1, 4, 16, 64):
        b = annealing.linear(k)
        lo, up = (float(x) for x in thermodynamic.tvo_bounds(b, eta(b)[0]))
        assert lo < LOG_Z < up
        np.testing.assert_allclose(up - lo, (eta(1.0)[0] - eta(0.0)[0]) / k, rtol=1e-10)
        errs.append((LOG_Z - lo, up - LOG_Z))
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in zip(errs, errs[1:], strict=False))
    # K = 1: ELBO = E_{pi_0}[log L] = log Z - KL(pi_0 || pi_1)
    post_v, post_m = S**2 / (1 + S**2), Y / (1 + S**2)
    kl_prior_post = 0.5 * np.sum(1 / post_v + post_m**2 / post_v - 1 + np.log(post_v))
    np.testing.assert_allclose(LOG_Z - errs[0][0], LOG_Z - kl_prior_post, rtol=1e-10)


def test_moment_and_length_spaced_schedules():
    """From the exact eta on a fine grid: moment spacing puts equal steps in eta and has the
    linear schedule's gap (eta(1) - eta(0)) / K (split differently between the two bounds);
    length spacing has the least gap, about Lambda^2 / K (Lambda the thermodynamic length)."""
    with jax.enable_x64(True):
        _spaced_schedules()


def _spaced_schedules():
    grid = np.linspace(0, 1, 4001)
    m, var = eta(grid)
    k = 8
    bm = annealing.moment_spaced(grid, m, k)
    bl = annealing.length_spaced(grid, var, k)
    for b in (bm, bl):
        assert b.shape == (k + 1,) and b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)
    steps = np.diff(eta(bm)[0])
    np.testing.assert_allclose(steps, steps.mean(), rtol=0.02)
    lin = thermodynamic.tvo_bounds(annealing.linear(k), eta(annealing.linear(k))[0])
    mom = thermodynamic.tvo_bounds(bm, eta(bm)[0])
    lng = thermodynamic.tvo_bounds(bl, eta(bl)[0])
    for t in (lin, mom, lng):
        assert t.lower < LOG_Z < t.upper
    np.testing.assert_allclose(float(mom.gap), float(lin.gap), rtol=0.02)
    length = np.sum(np.diff(grid) * (np.sqrt(var[1:]) + np.sqrt(var[:-1])) / 2)
    assert float(lng.gap) < 0.7 * float(lin.gap)
    np.testing.assert_allclose(float(lng.gap), length**2 / k, rtol=0.15)


@functools.cache
def _smc_moments(num_particles=256, num_runs=32, k=16):
    betas = annealing.moment_spaced(np.linspace(0, 1, 2001), eta(np.linspace(0, 1, 2001))[0], k)

    def one(key):
        return thermodynamic.tempered_moments(
            key,
            lambda kk: jax.random.normal(kk, (D,)),
            lambda x: norm_logpdf(x, 0.0, 1.0),
            lambda x: norm_logpdf(Y, x, S),
            betas,
            blackjax.hmc,
            num_particles,
            kernel_params=PARAMS,
            num_mcmc_steps=2,
        )

    with jax.enable_x64(True):
        out = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), num_runs))
    return betas, jax.tree.map(np.asarray, out)


def norm_logpdf(x, m, s):
    return jax.numpy.sum(-0.5 * ((x - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi))


def test_tempered_moments_match_closed_form():
    """SMC estimates of eta and Var[log L] at 17 moment-spaced temperatures (N = 256, 32 runs)
    agree with the closed form (|z| < 4 at every temperature; the SNIS bias is O(1/N)), and
    the TVO bounds from the particles bracket log Z (z-scores over runs)."""
    betas, out = _smc_moments()
    m, var = eta(betas)
    z_m = (out.moments.mean(0) - m) / (out.moments.std(0, ddof=1) / np.sqrt(out.moments.shape[0]))
    assert np.all(np.abs(z_m) < 4), z_m  # z-score
    # variances: relative agreement (heavier-tailed estimator), 10 %
    np.testing.assert_allclose(out.variances.mean(0), var, rtol=0.1)
    lo, up = thermodynamic.tvo_bounds(out.betas, out.moments)
    lo, up = np.asarray(lo), np.asarray(up)
    assert lo.mean() < LOG_Z + 4 * se(lo)  # z-score
    assert up.mean() > LOG_Z - 4 * se(up)  # z-score
    exact = thermodynamic.tvo_bounds(betas, m)
    assert abs(lo.mean() - float(exact.lower)) < 4 * se(lo) + 0.01  # z-score (+ SNIS bias)
    assert abs(up.mean() - float(exact.upper)) < 4 * se(up) + 0.01  # z-score
    # the SMC log Z of the same runs: unbiased Z (delta method, z-score)
    e = np.exp(out.log_Z - out.log_Z.max())
    lme = np.log(e.mean()) + out.log_Z.max()
    assert abs(lme - LOG_Z) / (e.std(ddof=1) / np.sqrt(e.size) / e.mean()) < 4  # z-score


def test_freeze_accepts_float64_jax_arrays():
    """``annealing.freeze`` copies: a float64 jax array (read-only through numpy) froze with
    "assignment destination is read-only" before."""
    with jax.enable_x64(True):
        b = jax.numpy.asarray([0.0, 0.3, 1.0 - 1e-9, 1.0], jax.numpy.float64)
        out = annealing.freeze(b, 2)
    np.testing.assert_array_equal(out, [0.0, 0.3, 1.0])
