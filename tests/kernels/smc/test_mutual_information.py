"""Mutual information bounds on a linear-Gaussian model (PPCA / linear VAE) with closed forms:
z ~ N(0, I_3), x | z ~ N(W z, s^2 I_4), I(x; z) = 1/2 log det(I + W W^T / s^2) = 4.55 nats,
above log K for the K = 16 of the InfoNCE-type checks."""

import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.smc import annealing
from kernels.smc import mutual_information as mi

DZ, DX, S = 3, 4, 0.5
W = np.array([[2.0, 0.3, -0.5], [0.4, 1.5, 0.2], [-0.3, 0.6, 2.5], [1.0, -1.0, 0.5]])
C = W @ W.T + S**2 * np.eye(DX)  # Cov(x)
MI = 0.5 * np.linalg.slogdet(np.eye(DX) + W @ W.T / S**2)[1]
POST_COV = np.linalg.inv(np.eye(DZ) + W.T @ W / S**2)
POST_GAIN = POST_COV @ W.T / S**2  # E[z | x] = POST_GAIN @ x
PARAMS = dict(step_size=0.15, inverse_mass_matrix=np.ones(DZ), num_integration_steps=8)
R = 64


def sample_joint(k):
    k1, k2 = jax.random.split(k)
    z = jax.random.normal(k1, (DZ,))
    return z, W @ z + S * jax.random.normal(k2, (DX,))


def sample_prior(k):
    return jax.random.normal(k, (DZ,))


def log_prior(z):
    return -0.5 * (z @ z + DZ * np.log(2 * np.pi))


def log_lik(z, x):
    r = x - W @ z
    return -0.5 * (r @ r) / S**2 - DX * np.log(S) - 0.5 * DX * np.log(2 * np.pi)


def gaussian_logpdf(cov):
    """``x, mean -> log N(x; mean, cov)`` with the precision and log det precomputed (numpy):
    compiles much faster than ``jax.scipy.stats.multivariate_normal`` (no Cholesky in XLA)."""
    prec, logdet = np.linalg.inv(cov), np.linalg.slogdet(cov)[1]
    const = -0.5 * (logdet + cov.shape[0] * np.log(2 * np.pi))

    def logpdf(x, mean):
        r = x - mean
        return const - 0.5 * r @ (prec @ r)

    return logpdf


_LOG_N_C = gaussian_logpdf(C)


def log_marginal(x):
    return _LOG_N_C(x, jnp.zeros(DX))


def posterior(inflate=1.0):
    """``q(z | x) = N(E[z|x], inflate * Cov[z|x])``: exact at ``inflate = 1``."""
    cov = inflate * POST_COV
    chol = np.linalg.cholesky(cov)

    def sample(k, x):
        return POST_GAIN @ x + chol @ jax.random.normal(k, (DZ,))

    log_n = gaussian_logpdf(cov)

    def log_q(z, x):
        return log_n(z, POST_GAIN @ x)

    return sample, log_q


def kl_posterior(inflate):
    """``E_x KL(p(z|x) || q(z|x))`` for ``q`` with covariance ``inflate * Cov[z|x]``."""
    return 0.5 * DZ * (1 / inflate - 1 + np.log(inflate))


def se(a):
    return np.std(a, ddof=1) / np.sqrt(np.size(a))


def _exact(key, num_runs, split=4, index=0):
    """Joint draws made with the same keys as the estimators (``split(k, split)[index]``),
    and the pointwise MI ``log p(x|z) - log p(x)`` and ``log p(x)`` at them."""

    def one(k):
        z, x = sample_joint(jax.random.split(k, split)[index])
        lpx = log_marginal(x)
        return log_lik(z, x) - lpx, lpx

    return jax.vmap(one)(jax.random.split(key, num_runs))


@functools.cache
def _ais(num_chains, num_temps, ess_threshold=0.0):
    with jax.enable_x64(True):
        betas = annealing.sigmoid(num_temps, 6.0)
        key = jax.random.key(10 * num_chains + num_temps)
        b = jax.jit(
            lambda k: mi.ais_bounds(
                k,
                sample_joint,
                sample_prior,
                log_prior,
                log_lik,
                betas,
                blackjax.hmc,
                num_chains,
                R,
                kernel_params=PARAMS,
                ess_threshold=ess_threshold,
            )
        )(key)
        pmi, lpx = jax.jit(lambda k: _exact(k, R))(key)
        return jax.tree.map(np.asarray, b), np.asarray(pmi), np.asarray(lpx)


@pytest.mark.slow
def test_closed_form_pointwise_mi():
    """The model's pointwise MI averages to the closed form (checks the fixture itself)."""
    pmi = _closed_form_checks(True)["pmi"]
    assert abs(pmi.mean() - MI) / se(pmi) < 4  # z-score


def test_ais_bounds_bracket_true_mi():
    """K = 4 AIS chains, 32 sigmoid temperatures, R = 64 joint draws. Measured: lower 4.15,
    upper 5.03, truth 4.55 (gap 0.88)."""
    b, pmi, lpx = _ais(4, 32)
    # per run, on log p(x_r): E[L - log p(x)] <= 0 <= E[U - log p(x)] (pointwise MI removed)
    d_lo, d_up = b.log_marginal_lower - lpx, b.log_marginal_upper - lpx
    assert d_lo.mean() < 4 * se(d_lo)  # z-score
    assert d_up.mean() > -4 * se(d_up)  # z-score
    # the same on the MI bounds: lower - pmi = log p(x) - U, upper - pmi = log p(x) - L
    np.testing.assert_allclose(b.lower - pmi, -d_up, atol=1e-8)
    np.testing.assert_allclose(b.upper - pmi, -d_lo, atol=1e-8)
    assert b.lower.mean() < MI + 4 * np.hypot(se(b.lower - pmi), se(pmi))  # z-score
    assert b.upper.mean() > MI - 4 * np.hypot(se(b.upper - pmi), se(pmi))  # z-score
    # distribution-free (Markov + union bound over runs, alpha = 0.01): P(max_r (L_r -
    # log p(x_r)) > log(2R/alpha)) <= alpha/2, and likewise for -(U_r - log p(x_r))
    slack = np.log(2 * R / 0.01)
    assert d_lo.max() <= slack and d_up.min() >= -slack
    # and the bounds are informative: gap 0.88 +- 0.15 measured
    assert b.gap.mean() < 1.5


@pytest.mark.slow
def test_ais_bounds_tighten_with_chains_and_temperatures():
    """Measured gaps: K=1,T=8: 9.9; K=8,T=8: 1.9; K=1,T=128: 0.86."""
    g = {kt: _ais(*kt)[0].gap for kt in [(1, 8), (8, 8), (1, 128)]}
    for a, b in [((1, 8), (8, 8)), ((1, 8), (1, 128))]:
        diff = g[a].mean() - g[b].mean()
        assert diff > 4 * np.hypot(se(g[a]), se(g[b]))  # z-score
    for kt in g:  # every configuration brackets the truth
        b, pmi, _ = _ais(*kt)
        assert b.lower.mean() < MI + 4 * np.hypot(se(b.lower - pmi), se(pmi))  # z-score
        assert b.upper.mean() > MI - 4 * np.hypot(se(b.upper - pmi), se(pmi))  # z-score


@pytest.mark.slow
def test_smc_and_conditional_smc_bounds_bracket():
    """ess_threshold = 0.5: SMC and conditional SMC (resampling) instead of independent chains,
    K = 8, T = 8: still brackets log p(x) run by run (z-scores) and the MI. Measured: lower
    3.94, upper 5.19 (gap 1.25 +- 0.18; independent chains, same K and T: 2.29 +- 0.28)."""
    b, pmi, lpx = _ais(8, 8, 0.5)
    d_lo, d_up = b.log_marginal_lower - lpx, b.log_marginal_upper - lpx
    assert d_lo.mean() < 4 * se(d_lo)  # z-score
    assert d_up.mean() > -4 * se(d_up)  # z-score
    assert b.lower.mean() < MI + 4 * np.hypot(se(b.lower - pmi), se(pmi))  # z-score
    assert b.upper.mean() > MI - 4 * np.hypot(se(b.upper - pmi), se(pmi))  # z-score


def _prior_q():
    return (lambda k, x: sample_prior(k)), (lambda z, x: log_prior(z))


@functools.cache
def _closed_form_checks(extra=False):
    """The IWAE / GIWAE / BA / InfoNCE estimates of the tests, in one jitted call per group
    (one compilation), with the pointwise MI at the joint draws of each (same keys).
    ``extra=True``: the group of the slow tests."""
    sample_wide, log_wide = posterior(2.0)
    sample_exact, log_exact = posterior(1.0)
    sample_p, log_p = _prior_q()
    critic = lambda z, x: log_prior(z) + log_lik(z, x) - log_wide(z, x)  # noqa: E731
    keys = {n: jax.random.key(i) for i, n in enumerate(["pmi", "exact", "prior", "wide"])}

    def iw(k, sq, lq, n, r):
        return mi.iwae_bounds(keys[k], sample_joint, sq, lq, log_prior, log_lik, n, r)

    def giwae(n):
        return mi.giwae_lower_bound(
            keys["wide"], sample_joint, sample_wide, log_wide, log_prior, critic, n, 512
        )

    def fast():
        return dict(
            exact=iw("exact", sample_exact, log_exact, 4, 64),
            exact_pmi=_exact(keys["exact"], 64, 3)[0],
            prior=iw("prior", sample_p, log_p, 16, 512),
            prior_pmi=_exact(keys["prior"], 512, 3)[0],
            w16=iw("wide", sample_wide, log_wide, 16, 512),
            wide_pmi=_exact(keys["wide"], 512, 3)[0],
            giwae16=giwae(16),
            giwae1=giwae(1),
        )

    def slow():
        zs, xs = jax.vmap(sample_joint)(jax.random.split(jax.random.key(9), 256 * 16))
        zs, xs = zs.reshape(256, 16, DZ), xs.reshape(256, 16, DX)
        scores = jax.vmap(jax.vmap(jax.vmap(log_lik, (0, None)), (None, 0)))(zs, xs)
        return dict(
            pmi=_exact(keys["pmi"], 4096)[0],
            w1=iw("wide", sample_wide, log_wide, 1, 512),
            w16=iw("wide", sample_wide, log_wide, 16, 512),
            wide_pmi=_exact(keys["wide"], 512, 3)[0],
            ba_exact=mi.barber_agakov_lower_bound(
                keys["pmi"], sample_joint, log_exact, log_prior, 4096
            ),
            nce=mi.infonce_lower_bound(scores),
        )

    with jax.enable_x64(True):
        return jax.tree.map(np.asarray, jax.jit(slow if extra else fast)())


def test_iwae_exact_posterior_is_exact():
    """q = p(z | x): every weight is p(x), so both bounds equal the pointwise MI."""
    c = _closed_form_checks()
    np.testing.assert_allclose(c["exact"].lower, c["exact_pmi"], atol=1e-8)
    np.testing.assert_allclose(c["exact"].upper, c["exact_pmi"], atol=1e-8)


def test_iwae_prior_proposal_saturates_at_log_k():
    """q = p(z), K = 16: the lower bound cannot exceed log K = 2.77 < I = 4.55 (every run,
    deterministically); the upper bound stays above the pointwise MI."""
    c = _closed_form_checks()
    b = c["prior"]
    assert np.all(b.lower <= np.log(16) + 1e-9)
    assert b.lower.mean() < MI - 1.0
    d = b.upper - c["prior_pmi"]
    assert d.mean() > -4 * se(d)  # z-score


@pytest.mark.slow
def test_iwae_bounds_bracket_and_tighten_with_k():
    """q with twice the posterior covariance: bounds bracket the pointwise MI (|z| < 4 per
    side) and the gap shrinks from K = 1 to K = 16 (same joint draws: paired)."""
    c = _closed_form_checks(True)
    for name in ("w1", "w16"):
        lo, up = c[name].lower - c["wide_pmi"], c[name].upper - c["wide_pmi"]
        assert lo.mean() < 4 * se(lo) and up.mean() > -4 * se(up)  # z-score
    g1, diff = c["w1"].gap, c["w1"].gap - c["w16"].gap
    assert diff.mean() > 4 * se(diff)  # z-score
    # K = 1: the bounds are the ELBO and EUBO, gap = KL(p||q) + KL(q||p) = 0.25 + 0.35 nats
    kl_qp = 0.5 * DZ * (2.0 - 1 - np.log(2.0))
    assert abs(g1.mean() - (kl_posterior(2.0) + kl_qp)) / se(g1) < 4  # z-score


def test_giwae_reductions():
    """GIWAE = IWAE lower bound for T = log p(x, z) / q (same keys); with K = 1 it is
    Barber-Agakov, short of the pointwise MI by the closed-form KL(p(z|x) || q); K = 16
    improves on it and stays below I."""
    c = _closed_form_checks()
    np.testing.assert_allclose(c["giwae16"], c["w16"].lower, rtol=1e-10, atol=1e-10)
    d1, d16 = c["giwae1"] - c["wide_pmi"], c["giwae16"] - c["wide_pmi"]
    assert abs(d1.mean() + kl_posterior(2.0)) / se(d1) < 4  # z-score
    assert d16.mean() < 4 * se(d16)  # z-score: GIWAE <= I
    diff = c["giwae16"] - c["giwae1"]  # K = 16 improves on BA (paired, same joint draws)
    assert diff.mean() > 4 * se(diff)  # z-score


@pytest.mark.slow
def test_barber_agakov_exact_and_infonce_saturates():
    """BA with the exact posterior is the MI; InfoNCE with the optimal critic
    T(x_i, z_j) = log p(x_i | z_j), 256 batches of K = 16, stays below log K < I."""
    c = _closed_form_checks(True)
    assert abs(c["ba_exact"].mean() - MI) / se(c["ba_exact"]) < 4  # z-score
    nce = c["nce"]
    assert np.all(nce <= np.log(16) + 1e-9)
    assert nce.mean() < MI - 1.0 and nce.mean() > np.log(16) - 1.0
