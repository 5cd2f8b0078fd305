"""ppl.BlackJAXKernel: any BlackJAX kernel factory inside numpyro.infer.MCMC.

Correctness against the closed-form posterior of a conjugate normal model (z-scores from the
ESS of numpyro.diagnostics), and the MCMC API: chain methods, post_warmup_state reuse,
extra_fields, print_summary, arviz, potential_fn, errors.
"""

import math

import arviz as az
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

from ppl import BlackJAXKernel

# conjugate normal: mu ~ N(0, 10^2), y_i ~ N(mu, 2^2), 20 observations
Y = np.asarray(jax.random.normal(jax.random.key(42), (20,)) * 2.0 + 1.5)
PRIOR_SD, NOISE_SD = 10.0, 2.0
POST_VAR = 1.0 / (1.0 / PRIOR_SD**2 + len(Y) / NOISE_SD**2)
POST_MEAN = POST_VAR * Y.sum() / NOISE_SD**2


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    numpyro.sample("y", dist.Normal(mu, NOISE_SD), obs=y)


def hmc_factory(logdensity_fn, step_size, inverse_mass_matrix):
    return blackjax.hmc(logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps=1)


def check_gaussian_moments(draws, mean, sd):
    """z-scores of the mean and the sd; draws of shape (chains, draws)."""
    draws = np.asarray(draws, np.float64)
    ess = float(effective_sample_size(draws))
    assert ess > 100, ess
    z_mean = (draws.mean() - mean) / (sd / math.sqrt(ess))
    # sd of a Gaussian sample: se(s)/s ~ 1/sqrt(2 ESS)
    z_sd = (draws.std() / sd - 1.0) * math.sqrt(2.0 * ess)
    assert abs(z_mean) < 4, z_mean  # z-score
    assert abs(z_sd) < 4, z_sd  # z-score


def run(chain_method, num_chains=2, seed=0, **kwargs):
    kernel = BlackJAXKernel(normal_model, kernel_factory=hmc_factory, **kwargs)
    mcmc = MCMC(
        kernel,
        num_warmup=200,
        num_samples=600,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(
        jax.random.key(seed),
        Y,
        extra_fields=(
            "accept_prob",
            "num_steps",
            "diverging",
            "adapt_state.step_size",
            "info.is_accepted",
        ),
    )
    return mcmc


@pytest.fixture(scope="module")
def vectorized():
    return run("vectorized", num_chains=3)


@pytest.mark.parametrize("chain_method", ["sequential", "parallel"])
def test_chain_methods_match_closed_form(chain_method):
    mcmc = run(chain_method)
    check_gaussian_moments(
        mcmc.get_samples(group_by_chain=True)["mu"], POST_MEAN, math.sqrt(POST_VAR)
    )


def test_vectorized_matches_closed_form(vectorized):
    draws = vectorized.get_samples(group_by_chain=True)["mu"]
    assert draws.shape == (3, 600)
    check_gaussian_moments(draws, POST_MEAN, math.sqrt(POST_VAR))


def test_extra_fields(vectorized):
    fields = vectorized.get_extra_fields(group_by_chain=True)
    for name in ("accept_prob", "num_steps", "diverging", "adapt_state.step_size"):
        assert fields[name].shape == (3, 600), name
    assert fields["info.is_accepted"].dtype == bool
    assert np.all(fields["num_steps"] == 1)  # blackjax.hmc's num_integration_steps
    # the step size is frozen after warmup
    step = np.asarray(fields["adapt_state.step_size"])
    assert np.all(step == step[:, :1])
    # accept_prob is the mean of min(1, ratio); is_accepted its realisation (binomial z-score)
    acc = np.asarray(fields["accept_prob"]).mean()
    rate = np.asarray(fields["info.is_accepted"]).mean()
    assert abs(rate - acc) < 4 * math.sqrt(acc * (1 - acc) / rate.size) + 0.02  # z-score


def test_post_warmup_state_reuse(vectorized):
    warm = vectorized.last_state
    step = np.asarray(warm.adapt_state.step_size)
    vectorized.post_warmup_state = warm
    vectorized.run(warm.rng_key, Y, extra_fields=("adapt_state.step_size", "i"))
    fields = vectorized.get_extra_fields(group_by_chain=True)
    np.testing.assert_array_equal(fields["adapt_state.step_size"][:, 0], step)
    assert int(fields["i"][0, 0]) == 200 + 600 + 1  # no new warmup
    check_gaussian_moments(
        vectorized.get_samples(group_by_chain=True)["mu"], POST_MEAN, math.sqrt(POST_VAR)
    )
    vectorized.post_warmup_state = None


def test_print_summary_and_arviz(vectorized, capsys):
    vectorized.print_summary()
    out = capsys.readouterr().out
    assert "mu" in out and "n_eff" in out and "Number of divergences" in out
    idata = az.from_numpyro(vectorized)
    assert idata.posterior["mu"].shape == (3, 600)
    assert "diverging" in idata.sample_stats
    assert "y" in idata.observed_data
    summary = az.summary(idata, var_names=["mu"])
    assert summary.loc["mu", "r_hat"] < 1.05


def test_potential_fn_dense_mass_correlated_gaussian():
    """potential_fn path, dense mass matrix, heuristic step size, batched init_params, and a
    kernel whose init takes a PRNG key (blackjax.dynamic_hmc)."""
    cov = np.array([[1.0, 0.95], [0.95, 1.0]]) * np.array([[4.0, 0.2], [0.2, 0.01]])
    prec = jnp.asarray(np.linalg.inv(cov))

    def potential(z):
        return 0.5 * z["x"] @ prec @ z["x"]

    kernel = BlackJAXKernel(
        potential_fn=potential,
        kernel_factory=blackjax.dynamic_hmc,  # jittered trajectory lengths; init needs a key
        dense_mass=True,
        find_heuristic_step_size=True,
    )
    mcmc = MCMC(kernel, num_warmup=300, num_samples=600, num_chains=2, progress_bar=False)
    mcmc.run(jax.random.key(3), init_params={"x": jnp.ones((2, 2))})
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    assert mcmc.last_state.adapt_state.inverse_mass_matrix.shape == (2, 2, 2)
    for i in range(2):
        check_gaussian_moments(x[..., i], 0.0, math.sqrt(cov[i, i]))


def test_errors():
    with pytest.raises(ValueError, match="exactly one of `model` or `potential_fn`"):
        BlackJAXKernel(kernel_factory=hmc_factory)
    with pytest.raises(ValueError, match="exactly one of `model` or `potential_fn`"):
        BlackJAXKernel(normal_model, potential_fn=lambda z: z, kernel_factory=hmc_factory)
    with pytest.raises(TypeError, match="kernel_factory must be callable"):
        BlackJAXKernel(normal_model, kernel_factory="hmc")
    with pytest.raises(TypeError, match="list of tuples of site names"):
        BlackJAXKernel(normal_model, kernel_factory=hmc_factory, dense_mass=[["mu"]])
    with pytest.raises(ValueError, match="target_accept_prob"):
        BlackJAXKernel(normal_model, kernel_factory=hmc_factory, target_accept_prob=1.5)
    pot = BlackJAXKernel(potential_fn=lambda z: jnp.sum(z**2), kernel_factory=hmc_factory)
    with pytest.raises(ValueError, match="pass `init_params`"):
        pot.init(jax.random.key(0), 10, None, (), {})
    with pytest.raises(ValueError, match="not finite"):
        BlackJAXKernel(potential_fn=lambda z: jnp.sum(jnp.log(z)), kernel_factory=hmc_factory).init(
            jax.random.key(0), 10, -jnp.ones(2), (), {}
        )
    with pytest.raises(ValueError, match="not finite"):  # one bad chain of a vectorized batch
        BlackJAXKernel(potential_fn=lambda z: jnp.sum(jnp.log(z)), kernel_factory=hmc_factory).init(
            jax.random.split(jax.random.key(0), 2), 10, jnp.array([[1.0], [-1.0]]), (), {}
        )
    bad_mass = BlackJAXKernel(
        potential_fn=lambda z: jnp.sum(z**2),
        kernel_factory=hmc_factory,
        inverse_mass_matrix=jnp.ones(3),
    )
    with pytest.raises(ValueError, match=r"inverse_mass_matrix has shape \(3,\).*2 entries"):
        bad_mass.init(jax.random.key(0), 10, jnp.ones(2), (), {})
    with pytest.raises(NotImplementedError, match="override make_algorithm"):
        BlackJAXKernel(normal_model).init(jax.random.key(0), 10, None, (Y,), {})
