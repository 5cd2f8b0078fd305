"""Tempered SMC / AIS bounds on a conjugate Gaussian with an asymmetric (shifted) likelihood."""

import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from kernels.smc import annealing, estimators, tempering

D, S = 2, 0.5
Y = np.array([2.5, -1.0])  # shifted: posterior far from the prior on one side only
LOG_Z = float(np.sum(norm.logpdf(Y, 0.0, np.sqrt(1 + S**2))))
POST_MEAN, POST_SD = Y / (1 + S**2), np.sqrt(S**2 / (1 + S**2))
BETAS = annealing.linear(8)
PARAMS = dict(step_size=0.4, inverse_mass_matrix=np.ones(D), num_integration_steps=4)
R = 96


def log_prior(x):
    return norm.logpdf(x).sum()


def log_lik(x):
    return norm.logpdf(jnp.asarray(Y, x.dtype), x, S).sum()


def sample_prior(k):
    return jax.random.normal(k, (D,))


def _run(key, n, reference=None, betas=BETAS, ess_threshold=0.5):
    return tempering.run(
        key,
        sample_prior,
        log_prior,
        log_lik,
        betas,
        blackjax.hmc,
        n,
        kernel_params=PARAMS,
        num_mcmc_steps=1,
        reference=reference,
        ess_threshold=ess_threshold,
    )


def _ref(key, betas=BETAS):
    k1, k2 = jax.random.split(key)
    x = POST_MEAN + POST_SD * jax.random.normal(k1, (D,))
    return tempering.reference_path(
        k2, x, log_prior, log_lik, betas, blackjax.hmc, kernel_params=PARAMS
    )


@functools.cache
def _bounds(n):
    with jax.enable_x64(True):
        key = jax.random.key(n)
        lo = jax.jit(lambda k: estimators.smc_lower_bound(k, lambda kk: _run(kk, n), R))(key)
        up = jax.jit(
            lambda k: estimators.csmc_upper_bound(k, lambda kk, ref: _run(kk, n, ref), _ref, R)
        )(jax.random.fold_in(key, 1))
        return np.asarray(lo), np.asarray(up)


@pytest.mark.parametrize("n", [1, 16])
def test_bounds_bracket_log_Z(n):
    lo, up = _bounds(n)
    s = estimators.summarize(lo, up, alpha=0.01)
    # unbiasedness of Z_hat and 1/Z_hat: delta-method z-scores
    assert abs((s.unbiased_from_lower - LOG_Z) / s.unbiased_from_lower_se) < 4  # z-score
    assert abs((s.unbiased_from_upper - LOG_Z) / s.unbiased_from_upper_se) < 4  # z-score
    # distribution-free bracketing (Markov + union bound), alpha = 0.01
    assert s.max_lower_threshold <= LOG_Z <= s.min_upper_threshold
    # sandwich of the means
    se = lambda x: x.std(ddof=1) / np.sqrt(x.size)
    assert lo.mean() < LOG_Z + 4 * se(lo)  # z-score
    assert up.mean() > LOG_Z - 4 * se(up)  # z-score


def test_bounds_tighten_with_particles():
    (l1, u1), (l16, u16) = _bounds(1), _bounds(16)
    se = lambda a, b: np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert l16.mean() - l1.mean() > -4 * se(l1, l16)  # z-score: lower non-decreasing
    assert u1.mean() - u16.mean() > -4 * se(u1, u16)  # z-score: upper non-increasing
    assert (u16.mean() - l16.mean()) < (u1.mean() - l1.mean())  # the gap shrinks


def test_csmc_one_particle_is_reverse_ais():
    with jax.enable_x64(True):
        ref = _ref(jax.random.key(5))
        res = jax.jit(lambda k: _run(k, 1, ref))(jax.random.key(6))
        # reverse AIS along the backward chain: sum_t (beta_t - beta_{t-1}) log L(x_t)
        ll = jax.vmap(log_lik)(ref)
        rais = np.sum(np.diff(BETAS) * np.asarray(ll[1:]))
        np.testing.assert_allclose(float(res.log_Z), rais, rtol=1e-10)
        assert res.particles.shape == (1, D)
        np.testing.assert_allclose(res.particles[0], ref[-1])


def test_adaptive_schedule_frozen_for_bounds():
    pilot = jax.jit(
        lambda k: tempering.adaptive(
            k,
            sample_prior,
            log_prior,
            log_lik,
            blackjax.hmc,
            64,
            kernel_params=PARAMS,
            target_ess=0.5,
        )
    )(jax.random.key(0))
    k = int(pilot.num_steps)
    betas = annealing.freeze(pilot.betas, k)
    assert 2 <= k < 50 and betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)
    # the conditional ESS of each adaptive step hit the target (except the last, clipped to 1)
    assert abs(float(pilot.log_Z) - LOG_Z) < 1.0
    res = jax.jit(lambda kk: _run(kk, 32, betas=betas))(jax.random.key(1))
    assert res.ess.shape == (k + 1,) and np.isfinite(float(res.log_Z))


def test_involutive_hmc_as_move():
    from kernels.involutive import hmc

    res = jax.jit(
        lambda k: tempering.run(
            k, sample_prior, log_prior, log_lik, BETAS, hmc, 64, kernel_params=PARAMS
        )
    )(jax.random.key(2))
    assert abs(float(res.log_Z) - LOG_Z) < 1.0


def test_errors():
    with pytest.raises(TypeError, match="build_kernel"):
        _run_bad = tempering.run(
            jax.random.key(0), sample_prior, log_prior, log_lik, BETAS, object(), 4
        )
        del _run_bad
    with pytest.raises(ValueError, match="1-d schedule"):
        tempering.run(jax.random.key(0), sample_prior, log_prior, log_lik, [1.0], blackjax.hmc, 4)
    with pytest.raises(ValueError, match="strictly"):
        annealing.freeze([0.0, 0.5, 0.4, 1.0])


def test_q_path_unbiased():
    """Tempered SMC along a power-mean q-path (q = 0.5) is unbiased for the same Z."""
    with jax.enable_x64(True):
        path = annealing.q_path(0.5)

        def one(k):
            return tempering.run(
                k,
                sample_prior,
                log_prior,
                log_lik,
                annealing.sigmoid(10),
                blackjax.hmc,
                32,
                kernel_params=PARAMS,
                path=path,
            ).log_Z

        lz = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(9), 64)))
        e = np.exp(lz - LOG_Z)
        assert abs((e.mean() - 1) / (e.std(ddof=1) / np.sqrt(e.size))) < 4  # z-score
