"""Discrete deterministic Gibbs on BlackJAX's contract (kernels.flows.deterministic_gibbs_move),
as the move inside blackjax.tempered_smc and kernels.smc.tempering.run.

Target on {0..3}^3 (64 states): uniform prior, log L(x) = -0.5 sum_i (x_i - 2.2)^2 / 0.8 +
0.2 x_0 x_1. log Z and the posterior mean of x by enumeration; over 16 independent SMC runs,
z = (mean over runs - truth) / (sd over runs / 4), |z| < 4.
"""

import itertools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.smc import extend_params

from kernels.flows import deterministic_gibbs_move
from kernels.smc import resampling as rs
from kernels.smc import tempering

K, D, PARTICLES, RUNS = 4, 3, 256, 16
SUPPORTS = (K,) * D
BETAS = jnp.linspace(0.0, 1.0, 6)


def logprior(x):
    return -D * jnp.log(float(K)) + 0.0 * jnp.sum(x)


def loglik(x):
    xf = x.astype(jnp.result_type(float))
    return -0.5 * jnp.sum((xf - 2.2) ** 2) / 0.8 + 0.2 * xf[0] * xf[1]


def logpost(x):
    return logprior(x) + loglik(x)


def truth():
    states = jnp.asarray(list(itertools.product(range(K), repeat=D)))
    lp = np.asarray(jax.vmap(logpost)(states), np.float64)
    m = lp.max()
    w = np.exp(lp - m)
    return m + np.log(w.sum()), (w[:, None] * np.asarray(states)).sum(0) / w.sum()


def _check(log_z, mean):
    log_z, mean = np.asarray(log_z), np.asarray(mean)
    true_log_z, true_mean = truth()
    z = (log_z.mean() - true_log_z) / (log_z.std(ddof=1) / np.sqrt(RUNS))
    assert abs(z) < 4, (log_z.mean(), true_log_z, z)  # z-score
    z = (mean.mean(0) - true_mean) / (mean.std(0, ddof=1) / np.sqrt(RUNS))
    assert np.all(np.abs(z) < 4), (mean.mean(0), true_mean, z)  # z-score


@pytest.mark.slow
def test_top_level_api_and_invariance():
    """The API's pieces agree; from exact draws, 8 moves keep the enumerated law
    (4096 chains, per state |z| < 4.5 over 64 states)."""
    api = deterministic_gibbs_move
    assert isinstance(api, blackjax.GenerateSamplingAPI)
    algo = api(logpost, SUPPORTS)
    state = algo.init(jnp.zeros(D, jnp.int32))
    new, info = jax.jit(algo.step)(jax.random.key(0), state)
    assert new.position.shape == (D,) and new.position.dtype == jnp.int32
    assert float(info.acceptance_rate) == 1.0 and int(info.num_events) >= 1
    same, _ = api.build_kernel(SUPPORTS)(jax.random.key(0), state, logpost)
    np.testing.assert_array_equal(same.position, new.position)

    states = np.asarray(list(itertools.product(range(K), repeat=D)))
    lp = np.asarray(jax.vmap(logpost)(jnp.asarray(states)), np.float64)
    p = np.exp(lp - lp.max())
    p /= p.sum()
    n = 4096
    idx = jax.random.choice(jax.random.key(1), len(p), (n,), p=jnp.asarray(p))
    x0 = jnp.asarray(states)[idx]

    def chain(key, x):
        def body(s, k):
            return algo.step(k, s)[0], None

        return jax.lax.scan(body, algo.init(x), jax.random.split(key, 8))[0].position

    x = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(2), n), x0))
    code = (x * K ** np.arange(D - 1, -1, -1)).sum(1)
    freq = np.bincount(code, minlength=len(p)) / n
    z = (freq - p) / np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(z) < 4.5), np.abs(z).max()  # z-score, 64 states


def test_inside_blackjax_tempered_smc():
    smc = blackjax.tempered_smc(
        logprior,
        loglik,
        deterministic_gibbs_move.build_kernel(SUPPORTS),
        deterministic_gibbs_move.init,
        extend_params({"time": 1.0}),
        rs.for_blackjax(rs.systematic),
        num_mcmc_steps=2,
    )

    @jax.jit
    def run(key):
        key_init, key_smc = jax.random.split(key)
        state = smc.init(jax.random.randint(key_init, (PARTICLES, D), 0, K))

        def body(state, inp):
            key, lmbda = inp
            state, info = smc.step(key, state, lmbda)
            return state, info.log_likelihood_increment

        keys = jax.random.split(key_smc, len(BETAS) - 1)
        state, incs = jax.lax.scan(body, state, (keys, BETAS[1:]))
        return jnp.sum(incs), jnp.sum(state.weights[:, None] * state.particles, 0)

    _check(*jax.vmap(run)(jax.random.split(jax.random.key(3), RUNS)))


@pytest.mark.slow
def test_inside_kernels_tempered_smc():
    @jax.jit
    def run(key):
        res = tempering.run(
            key,
            lambda k: jax.random.randint(k, (D,), 0, K),
            logprior,
            loglik,
            BETAS,
            deterministic_gibbs_move,
            PARTICLES,
            kernel_params={"supports": SUPPORTS, "time": 1.0},
            num_mcmc_steps=2,
        )
        w = jnp.exp(res.log_weights)
        return res.log_Z, jnp.sum(w[:, None] * res.particles, 0)

    _check(*jax.vmap(run)(jax.random.split(jax.random.key(4), RUNS)))
