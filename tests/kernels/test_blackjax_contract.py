"""BlackJAX's top-level API for the kernels beyond the involutive built-ins, and conformance.

Each kernel is a ``blackjax.GenerateSamplingAPI``: called it gives a ``SamplingAlgorithm``,
and ``.init(position, logdensity_fn)`` / ``.build_kernel(...)`` drive it as the move inside
``blackjax.tempered_smc`` (parameters extended per particle) and inside
``kernels.smc.tempering.run``. (The involutive built-ins are checked inside
``blackjax.tempered_smc`` by ``test_involutive_smc.py``.)

Target: x ~ N(0, I_2), y_i | x ~ N(x, I_2), i = 1..5. log Z and the posterior mean of the
weighted particles against closed form, over 16 independent SMC runs:
z = (mean over runs - truth) / (sd over runs / 4), |z| < 4. One kernel inside BlackJAX in the
default run (about 9 s), the other cases (and all inside kernels.smc.tempering) marked slow.
"""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.smc import extend_params
from blackjax.smc import resampling as bj_resampling
from scipy.stats import multivariate_normal

import kernels.orbital as orb
from kernels.smc import tempering

N_OBS, DIM, PARTICLES, RUNS = 5, 2, 400, 16
Y = np.random.default_rng(0).normal(1.0, 1.0, size=(N_OBS, DIM))
BETAS = jnp.concatenate([jnp.zeros(1), jnp.linspace(0.0, 1.0, 9)[1:] ** 2])


def logprior(x):
    return -0.5 * jnp.sum(x**2) - 0.5 * DIM * jnp.log(2 * jnp.pi)


def loglik(x):
    return jnp.sum(-0.5 * (Y - x) ** 2 - 0.5 * jnp.log(2 * jnp.pi))


def true_log_z():
    cov = np.eye(N_OBS) + np.ones((N_OBS, N_OBS))  # per coordinate, y_{1:n} ~ N(0, I + 11^T)
    return sum(multivariate_normal(np.zeros(N_OBS), cov).logpdf(Y[:, j]) for j in range(DIM))


IMM = jnp.ones(DIM)
KERNELS = {
    # name: (api, static arguments of build_kernel, per-particle parameters)
    "orbital_hmc": (orb.orbital_hmc, {"period": 6}, {"step_size": 0.3, "inverse_mass_matrix": IMM}),
    "multinomial_hmc": (
        orb.multinomial_hmc,
        {"num_integration_steps": 5},
        {"step_size": 0.3, "inverse_mass_matrix": IMM},
    ),
    "contracting_orbital_hmc": (
        orb.contracting_orbital_hmc,
        {"max_steps": 8},
        {"step_size": 0.3, "inverse_mass_matrix": IMM, "friction": 0.5},
    ),
}


def _check(log_z, mean):
    log_z, mean = np.asarray(log_z), np.asarray(mean)
    assert np.all(np.isfinite(log_z))
    z = (log_z.mean() - true_log_z()) / (log_z.std(ddof=1) / np.sqrt(RUNS))
    assert abs(z) < 4, (log_z.mean(), true_log_z(), z)  # z-score
    post_mean = Y.sum(0) / (N_OBS + 1)
    for j in range(DIM):
        z = (mean[:, j].mean() - post_mean[j]) / (mean[:, j].std(ddof=1) / np.sqrt(RUNS))
        assert abs(z) < 4, (j, mean[:, j].mean(), post_mean[j], z)  # z-score


@pytest.mark.parametrize("name", list(KERNELS))
def test_top_level_api(name):
    api, static, params = KERNELS[name]
    assert isinstance(api, blackjax.GenerateSamplingAPI)
    algo = api(logprior, **params, **static)
    state = algo.init(jnp.ones(DIM))
    assert state.position.shape == (DIM,)
    new_state, info = jax.jit(algo.step)(jax.random.key(0), state)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert 0.0 <= float(info.acceptance_rate) <= 1.0
    kernel = api.build_kernel(**static)
    same, _ = kernel(jax.random.key(0), api.init(jnp.ones(DIM), logprior), logprior, **params)
    np.testing.assert_allclose(same.position, new_state.position, rtol=1e-6)


def _fast_one(fast):
    return [n if n == fast else pytest.param(n, marks=pytest.mark.slow) for n in KERNELS]


@pytest.mark.parametrize("name", _fast_one("orbital_hmc"))
def test_inside_blackjax_tempered_smc(name):
    api, static, params = KERNELS[name]
    smc = blackjax.tempered_smc(
        logprior,
        loglik,
        api.build_kernel(**static),
        api.init,
        extend_params(params),
        bj_resampling.systematic,
        num_mcmc_steps=3,
    )

    @jax.jit
    def run(key):
        key_init, key_smc = jax.random.split(key)
        state = smc.init(jax.random.normal(key_init, (PARTICLES, DIM)))

        def body(state, inp):
            key, lmbda = inp
            state, info = smc.step(key, state, lmbda)
            return state, info.log_likelihood_increment

        keys = jax.random.split(key_smc, len(BETAS) - 1)
        state, incs = jax.lax.scan(body, state, (keys, BETAS[1:]))
        return jnp.sum(incs), jnp.sum(state.weights[:, None] * state.particles, 0)

    _check(*jax.vmap(run)(jax.random.split(jax.random.key(7), RUNS)))


@pytest.mark.parametrize("name", _fast_one(None))
def test_inside_kernels_tempered_smc(name):
    api, static, params = KERNELS[name]

    @jax.jit
    def run(key):
        res = tempering.run(
            key,
            lambda k: jax.random.normal(k, (DIM,)),
            logprior,
            loglik,
            BETAS,
            api,
            PARTICLES,
            kernel_params={**params, **static},
            num_mcmc_steps=3,
        )
        w = jnp.exp(res.log_weights)
        return res.log_Z, jnp.sum(w[:, None] * res.particles, 0)

    _check(*jax.vmap(run)(jax.random.split(jax.random.key(8), RUNS)))


def test_multinomial_hmc_former_num_steps_name():
    """``num_steps`` (the former name of ``num_integration_steps``) still works, with a
    DeprecationWarning, and gives the same chain."""
    params = {"step_size": 0.3, "inverse_mass_matrix": IMM}
    state = orb.multinomial_hmc.init(jnp.ones(DIM), logprior)
    new = orb.multinomial_hmc.build_kernel(num_integration_steps=5)
    with pytest.warns(DeprecationWarning, match="use num_integration_steps"):
        old = orb.multinomial_hmc.build_kernel(num_steps=5)
    a, _ = new(jax.random.key(0), state, logprior, **params)
    b, _ = old(jax.random.key(0), state, logprior, **params)
    np.testing.assert_array_equal(a.position, b.position)
    with pytest.raises(TypeError, match="not both"):
        orb.multinomial_hmc(logprior, 0.3, IMM, 5, num_steps=5)
