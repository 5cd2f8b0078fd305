"""The involutive built-ins drop into blackjax.tempered_smc unchanged (mcmc_step_fn/mcmc_init_fn).

Conjugate Gaussian: x ~ N(0, I_2), y_i | x ~ N(x, I_2), i = 1..5. Checked: log Z against the
closed form and the posterior mean of the particles against (sum y) / (n + 1), with
tolerances from the spread over independent SMC runs (z-scores).
"""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.smc import extend_params, resampling
from scipy.stats import multivariate_normal

import kernels.involutive as inv

N_OBS, DIM, PARTICLES, RUNS = 5, 2, 400, 16
Y = np.random.default_rng(0).normal(1.0, 1.0, size=(N_OBS, DIM))
SCHEDULE = jnp.linspace(0.0, 1.0, 9)[1:] ** 2


def logprior(x):
    return -0.5 * jnp.sum(x**2) - 0.5 * DIM * jnp.log(2 * jnp.pi)


def loglik(x):
    return jnp.sum(-0.5 * (Y - x) ** 2 - 0.5 * jnp.log(2 * jnp.pi))


def true_log_z():
    cov = np.eye(N_OBS) + np.ones((N_OBS, N_OBS))  # per coordinate, y_{1:n} ~ N(0, I + 11^T)
    return sum(multivariate_normal(np.zeros(N_OBS), cov).logpdf(Y[:, j]) for j in range(DIM))


PARAMS = {
    "hmc": {"step_size": 0.3, "inverse_mass_matrix": jnp.ones(DIM), "num_integration_steps": 5},
    "mala": {"step_size": 0.05, "inverse_mass_matrix": jnp.ones(DIM)},
    "rwm": {"scale": 0.5, "inverse_mass_matrix": jnp.ones(DIM)},
    "irreversible_mala": {"step_size": 0.05, "inverse_mass_matrix": jnp.ones(DIM), "alpha": 0.5},
}


@pytest.mark.parametrize("name", list(PARAMS))
def test_tempered_smc_inner_kernel(name):
    builtin = getattr(inv, name)
    smc = blackjax.tempered_smc(
        logprior,
        loglik,
        builtin.build_kernel(),
        builtin.init,
        extend_params(PARAMS[name]),
        resampling.systematic,
        num_mcmc_steps=5,
    )

    @jax.jit
    def run(key):
        key_init, key_smc = jax.random.split(key)
        state = smc.init(jax.random.normal(key_init, (PARTICLES, DIM)))

        def body(state, inp):
            key, lmbda = inp
            state, info = smc.step(key, state, lmbda)
            return state, info.log_likelihood_increment

        keys = jax.random.split(key_smc, len(SCHEDULE))
        state, incs = jax.lax.scan(body, state, (keys, SCHEDULE))
        mean = jnp.sum(state.weights[:, None] * state.particles, 0)
        return jnp.sum(incs), mean

    log_z, mean = map(np.asarray, jax.vmap(run)(jax.random.split(jax.random.key(7), RUNS)))
    assert np.all(np.isfinite(log_z))
    z = (log_z.mean() - true_log_z()) / (log_z.std(ddof=1) / np.sqrt(RUNS))
    assert abs(z) < 4, (log_z.mean(), true_log_z(), z)  # z-score
    post_mean = Y.sum(0) / (N_OBS + 1)
    for j in range(DIM):
        z = (mean[:, j].mean() - post_mean[j]) / (mean[:, j].std(ddof=1) / np.sqrt(RUNS))
        assert abs(z) < 4, (j, mean[:, j].mean(), post_mean[j], z)  # z-score
