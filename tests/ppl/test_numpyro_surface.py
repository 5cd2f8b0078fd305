"""ppl's MCMC kernels on the NumPyro surface NUTS supports: models without a continuous latent
site (empty, all-deterministic, only enumerated discrete sites), enumerated discrete sites beside
continuous ones (funsor), and kernels built inside ``jit`` with traced hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

import ppl

KERNELS = {
    "hmc": lambda m, **kw: ppl.InvolutiveMCMC(m, involution="hmc", **kw),
    "mala": lambda m, **kw: ppl.InvolutiveMCMC(m, involution="mala", **kw),
    "orbital": lambda m, **kw: ppl.OrbitalMCMC(m, **kw),
}


def _empty():
    pass


def _deterministic_scalar():
    numpyro.deterministic("x", 1.0)


def _deterministic_vector():
    numpyro.deterministic("x", jnp.array([1.0, 2.0]))


def _only_enumerated():
    numpyro.sample("z", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize(
    "model, shapes",
    [
        (_empty, {}),
        (_deterministic_scalar, {"x": ()}),
        (_deterministic_vector, {"x": (2,)}),
        (_only_enumerated, {}),
    ],
    ids=["empty", "deterministic-scalar", "deterministic-vector", "only-enumerated"],
)
@pytest.mark.parametrize("chain_method, num_chains", [("sequential", 1), ("vectorized", 2)])
def test_models_without_continuous_latent(kernel, model, shapes, chain_method, num_chains):
    mcmc = MCMC(
        KERNELS[kernel](model),
        num_warmup=5,
        num_samples=7,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0))
    samples = mcmc.get_samples()
    assert {k: v.shape for k, v in samples.items()} == {
        k: (7 * num_chains, *s) for k, s in shapes.items()
    }
    if "x" in samples:
        np.testing.assert_array_equal(samples["x"][0], _value(model))
    mcmc.print_summary()  # runs (NumPyro prints no sites for these models)


def _value(model):
    return {_deterministic_scalar: 1.0, _deterministic_vector: [1.0, 2.0]}[model]


def _mixture():
    """x ~ 0.7 N(0, 1) + 0.3 N(1, 1): the enumerated z is summed out (funsor)."""
    z = numpyro.sample("z", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
    numpyro.sample("x", dist.Normal(jnp.where(z == 1, 1.0, 0.0), 1.0))


def _z(draws: np.ndarray, mean: float) -> float:
    """z-score of the chains' mean against ``mean``, with the ESS of ``[chains, draws]``."""
    ess = float(effective_sample_size(draws))
    return float((draws.mean() - mean) / (draws.std() / np.sqrt(ess)))


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_enumerated_discrete_site_beside_a_continuous_one(kernel):
    """E[x] = 0.3 and E[x^2] = 1 + 0.3 exactly; z < 4 with the ESS (4 chains x 2000 draws)."""
    pytest.importorskip("funsor")
    mcmc = MCMC(
        KERNELS[kernel](_mixture),
        num_warmup=300,
        num_samples=2000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(1))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    assert abs(_z(x, 0.3)) < 4
    assert abs(_z(x**2, 1.3)) < 4


def _beta_bernoulli(y):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    numpyro.sample("y", dist.Bernoulli(p), obs=y)


@pytest.mark.parametrize("kernel", ["hmc", "orbital"])
def test_kernel_built_inside_jit_with_traced_hyperparameters(kernel):
    """The whole run under ``jit`` with traced step size, trajectory length and target
    acceptance (as NumPyro's HMC allows); the posterior Beta(2 + k, 2 + n - k) mean, z < 4."""
    y = (np.arange(40) % 4 == 0).astype(np.float32)  # k = 10 of n = 40
    k, n = float(y.sum()), len(y)

    @jax.jit
    def run(key, y, step_size, trajectory_length, target_accept_prob):
        kern = KERNELS[kernel](
            _beta_bernoulli,
            step_size=step_size,
            trajectory_length=trajectory_length,
            target_accept_prob=target_accept_prob,
        )
        mcmc = MCMC(
            kern,
            num_warmup=300,
            num_samples=2000,
            num_chains=2,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(key, y)
        return mcmc.get_samples(group_by_chain=True)["p"]

    p = np.asarray(run(jax.random.key(2), jnp.asarray(y), 0.5, 1.5, 0.8), np.float64)
    assert np.all(np.isfinite(p))
    assert abs(_z(p, (2 + k) / (4 + n))) < 4


def test_bad_hyperparameters_still_raise_when_concrete():
    with pytest.raises(ValueError, match="target_accept_prob"):
        ppl.InvolutiveMCMC(_beta_bernoulli, target_accept_prob=1.5)
    with pytest.raises(ValueError, match="trajectory_length"):
        ppl.OrbitalMCMC(_beta_bernoulli, trajectory_length=-1.0)
    with pytest.raises(ValueError, match="step_size"):
        ppl.InvolutiveMCMC(_beta_bernoulli, step_size=0.0)
