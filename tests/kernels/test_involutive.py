"""Moments of the involutive built-ins and combinators against closed form.

Targets: a correlated Gaussian, an ill-conditioned Gaussian (sampled with its diagonal as inverse
mass matrix) and a banana (x1 ~ N(0, 1), x2 | x1 ~ N(b x1^2, 1): E x2 = b, Var x2 = 1 + 2 b^2).
Tolerance: |z| < 4 with z = (estimate - truth) / (sd / sqrt(ESS)), ESS from numpyro.diagnostics.
"""

import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size

import kernels.involutive as inv

CHAINS, STEPS, BURN = 8, 2500, 300

COV_CORR = np.array([[1.0, 0.9], [0.9, 1.0]])
VAR_ILL = np.array([1e-2, 1e-1, 1.0, 1e2])
BANANA_B = 0.5


def logp_corr(x):
    prec = jnp.linalg.inv(jnp.asarray(COV_CORR, x.dtype))
    return -0.5 * x @ prec @ x


def logp_ill(x):
    return -0.5 * jnp.sum(x**2 / VAR_ILL)


def logp_banana(x):
    return -0.5 * x[0] ** 2 - 0.5 * (x[1] - BANANA_B * x[0] ** 2) ** 2


TARGETS = {
    # name: (logp, dim, true mean, true E[x^2], inverse mass matrix)
    "corr": (logp_corr, 2, np.zeros(2), np.diag(COV_CORR), None),
    "ill": (logp_ill, 4, np.zeros(4), VAR_ILL, jnp.asarray(VAR_ILL, jnp.float32)),
    "banana": (
        logp_banana,
        2,
        np.array([0.0, BANANA_B]),
        np.array([1.0, 1.0 + 3 * BANANA_B**2]),  # E x2^2 = Var + mean^2 = 1 + 2b^2 + b^2
        None,
    ),
}


def _user_rwm(logp, scale):
    """Random walk written by a user: involution (x + s v, -v) with the Jacobian computed by JAX."""
    return inv.imcmc(
        logp,
        lambda key, x: jax.random.normal(key, x.shape),
        lambda v, x: -0.5 * jnp.sum(v**2),
        lambda x, v: (x + scale * v, -v),
    )


def _ghmc(logp, imm):
    move = inv.partial_refresh(inv.leapfrog_move(logp, 0.25, imm, 3), alpha=0.7)
    return inv.as_sampling_algorithm(move, logp, with_grad=True)


def _mixture_hmc(logp, imm):
    moves = [inv.leapfrog_move(logp, 0.25, imm, n) for n in (2, 7)]
    return inv.as_sampling_algorithm(inv.mixture(moves), logp, with_grad=True)


SAMPLERS = {
    # name: target -> SamplingAlgorithm
    "hmc": lambda lp, imm, unit: inv.hmc(lp, 0.25 * unit, imm, 7),
    "hmc_dense": lambda lp, imm, unit: inv.hmc(lp, 0.5, jnp.asarray(COV_CORR, jnp.float32), 5),
    "mala": lambda lp, imm, unit: inv.mala(lp, 0.05 * unit**2, imm),
    "rwm": lambda lp, imm, unit: inv.rwm(lp, 0.8 * unit, imm),
    "irreversible_mala": lambda lp, imm, unit: inv.irreversible_mala(lp, 0.05 * unit**2, imm),
    "user_rwm_autojac": lambda lp, imm, unit: _user_rwm(lp, 0.8 * unit),
    "ghmc_partial_refresh": lambda lp, imm, unit: _ghmc(lp, imm),
    "mixture_hmc": lambda lp, imm, unit: _mixture_hmc(lp, imm),
}

CASES = [(s, t) for s in ("hmc", "mala", "rwm", "irreversible_mala") for t in TARGETS] + [
    ("user_rwm_autojac", "corr"),
    ("hmc_dense", "corr"),
    ("ghmc_partial_refresh", "banana"),
    ("mixture_hmc", "corr"),
]


@functools.cache
def _run(sampler_name, target_name):
    logp, dim, *_, imm = TARGETS[target_name]
    unit = 1.0
    algo = SAMPLERS[sampler_name](logp, imm, unit)

    @jax.jit
    def run(key):
        def chain(key):
            state = algo.init(jnp.zeros(dim))

            def body(state, key):
                state, info = algo.step(key, state)
                return state, (state.position, info.acceptance_rate)

            _, out = jax.lax.scan(body, state, jax.random.split(key, STEPS))
            return out

        return jax.vmap(chain)(jax.random.split(key, CHAINS))

    xs, acc = run(jax.random.key(42))
    return np.asarray(xs[:, BURN:], np.float64), np.asarray(acc)


def _z(samples):
    """z-score of the mean of samples [chains, draws] using the pooled ESS."""
    ess = float(effective_sample_size(samples[..., None])[0])
    return samples.mean(), samples.std() / np.sqrt(ess), ess


@pytest.mark.parametrize("sampler_name, target_name", CASES)
def test_moments(sampler_name, target_name):
    xs, acc = _run(sampler_name, target_name)
    _, dim, mean, second, _ = TARGETS[target_name]
    assert np.all(np.isfinite(xs))
    assert 0.2 < acc.mean() <= 1.0
    scale = np.sqrt(second)  # standardise so that every coordinate counts
    for i in range(dim):
        for f, truth in ((xs[..., i] / scale[i], mean[i] / scale[i]), (xs[..., i] ** 2, second[i])):
            est, se, ess = _z(f)
            assert ess > 100, (sampler_name, target_name, i, ess)
            z = (est - truth) / se
            assert abs(z) < 4, (sampler_name, target_name, i, est, truth, z)  # z-score


@pytest.mark.parametrize("name", ["hmc", "mala"])
def test_same_chain_as_blackjax(name):
    """Same keys, same step: the involutive HMC/MALA reproduce blackjax.hmc/mala draw for draw.

    (Relies on both splitting the step key the same way; a change of BlackJAX's key usage
    would break this check without any statistical error on our side.)
    """
    logp = TARGETS["banana"][0]
    if name == "hmc":
        ours = inv.hmc(logp, 0.2, jnp.ones(2), 5)
        peer = blackjax.hmc(logp, 0.2, jnp.ones(2), 5)
    else:
        ours, peer = inv.mala(logp, 0.05), blackjax.mala(logp, 0.05)

    def run(algo):
        def body(state, key):
            state, info = algo.step(key, state)
            return state, state.position

        keys = jax.random.split(jax.random.key(5), 200)
        return jax.jit(lambda s: jax.lax.scan(body, s, keys)[1])(algo.init(jnp.ones(2)))

    np.testing.assert_allclose(run(ours), run(peer), rtol=1e-4, atol=1e-5)
