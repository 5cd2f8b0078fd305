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


def _exact_draw(k):
    return POST_MEAN + POST_SD * jax.random.normal(k, (D,))


@functools.cache
def _bounds(n):
    """R lower and upper bounds; N = 1 through the AIS / reverse-AIS estimators."""
    with jax.enable_x64(True):
        key = jax.random.key(n)
        if n == 1:
            kw = dict(kernel_params=PARAMS)
            lo = jax.jit(
                lambda k: estimators.ais_lower_bound(
                    k, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, R, **kw
                )
            )(key)
            up = jax.jit(
                lambda k: estimators.reverse_ais_upper_bound(
                    k, _exact_draw, log_prior, log_lik, BETAS, blackjax.hmc, R, **kw
                )
            )(jax.random.fold_in(key, 1))
            return np.asarray(lo), np.asarray(up)
        lo = jax.jit(lambda k: estimators.smc_lower_bound(k, lambda kk: _run(kk, n), R))(key)
        up = jax.jit(
            lambda k: estimators.csmc_upper_bound(k, lambda kk, ref: _run(kk, n, ref), _ref, R)
        )(jax.random.fold_in(key, 1))
        return np.asarray(lo), np.asarray(up)


def test_ais_estimators_are_one_particle_smc():
    """Shared randomness: ais_lower_bound = tempering.run with N = 1 (same keys), and reverse
    AIS = conditional SMC with one particle clamped to the same backward path."""
    kw = dict(kernel_params=PARAMS)

    def both(key):
        a = estimators.ais_lower_bound(
            key, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, 4, **kw
        )
        b = estimators.smc_lower_bound(key, lambda k: _run(k, 1, ess_threshold=0.0), 4)
        up = estimators.reverse_ais_upper_bound(
            key, _exact_draw, log_prior, log_lik, BETAS, blackjax.hmc, 4, **kw
        )

        def csmc(k):
            k1, k2 = jax.random.split(k)
            ref = tempering.reference_path(
                k2, _exact_draw(k1), log_prior, log_lik, BETAS, blackjax.hmc, **kw
            )
            return _run(jax.random.key(0), 1, ref).log_Z

        return a, b, up, jax.vmap(csmc)(jax.random.split(key, 4))

    with jax.enable_x64(True):
        a, b, up, cs = jax.jit(both)(jax.random.key(3))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(up, cs, rtol=1e-10)


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
    """E[L_N] non-decreasing and E[U_N] non-increasing along N = 1, 4, 16 (fixed schedule);
    each consecutive difference must not be significantly negative (z-scores, R = 96 runs)."""
    sizes = (1, 4, 16)
    b = {n: _bounds(n) for n in sizes}
    se = lambda a, c: np.sqrt(a.var(ddof=1) / a.size + c.var(ddof=1) / c.size)  # noqa: E731
    for m, n in zip(sizes[:-1], sizes[1:], strict=True):
        (lm, um), (ln, un) = b[m], b[n]
        assert (ln.mean() - lm.mean()) / se(lm, ln) > -4  # z-score: lower non-decreasing
        assert (um.mean() - un.mean()) / se(um, un) > -4  # z-score: upper non-increasing
        # the gap shrinks significantly: the checks above have power
        assert ((um - lm).mean() - (un - ln).mean()) / se(um - lm, un - ln) > 3  # z-score


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


def test_adaptive_schedule_hits_target_cess_and_freezes():
    """Asymmetric likelihood (y shifted on one side): with resampling at every step the ESS
    after each adaptive reweighting is exactly target * N (a sign error in the increment,
    invisible with symmetric targets, would miss it), and the frozen schedule drives run()."""
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
            ess_threshold=1.0,
        )
    )(jax.random.key(0))
    k = int(pilot.num_steps)
    betas = annealing.freeze(pilot.betas, k)
    assert 2 <= k < 50 and betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)
    np.testing.assert_allclose(np.asarray(pilot.ess[: k - 1]) / 64, 0.5, rtol=1e-3)
    assert float(pilot.ess[k - 1]) / 64 >= 0.5 - 1e-3  # the last step is clipped to beta = 1
    res = jax.jit(lambda kk: _run(kk, 32, betas=betas))(jax.random.key(1))
    assert res.ess.shape == (k + 1,) and np.isfinite(float(res.log_Z))


def _moves():
    from kernels import orbital
    from kernels.involutive import hmc, mala, rwm

    imm = np.ones(D)
    return {
        "blackjax.mala": (blackjax.mala, dict(step_size=0.1)),
        "kernels.involutive.hmc": (hmc, PARAMS),
        "kernels.involutive.mala": (mala, dict(step_size=0.1, inverse_mass_matrix=imm)),
        "kernels.involutive.rwm": (rwm, dict(scale=0.5, inverse_mass_matrix=imm)),
        "kernels.orbital": (orbital, dict(step_size=0.3, inverse_mass_matrix=imm, period=4)),
    }


@pytest.mark.parametrize(
    "name",
    [
        n
        if n in ("kernels.involutive.hmc", "kernels.orbital")
        else pytest.param(n, marks=pytest.mark.slow)
        for n in _moves()
    ],
)
def test_moves_from_kernels_and_blackjax(name):
    """Any BlackJAX-contract kernel is a valid move: log-mean-exp of R = 32 runs matches
    log Z (delta-method z-score)."""
    kernel, params = _moves()[name]
    with jax.enable_x64(True):
        lz = jax.jit(
            jax.vmap(
                lambda k: (
                    tempering.run(
                        k,
                        sample_prior,
                        log_prior,
                        log_lik,
                        BETAS,
                        kernel,
                        32,
                        kernel_params=params,
                        num_mcmc_steps=2,
                    ).log_Z
                )
            )
        )(jax.random.split(jax.random.key(8), 32))
    w = np.exp(np.asarray(lz) - LOG_Z)
    assert abs(np.log(w.mean()) / (w.std(ddof=1) / np.sqrt(w.size) / w.mean())) < 4  # z-score


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
