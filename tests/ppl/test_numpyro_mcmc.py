"""NumPyro's own ``test/infer/test_mcmc.py`` (pyro-ppl/numpyro, 0.22), adapted minimally to run
with ``ppl.InvolutiveMCMC`` (hmc, mala) and ``ppl.OrbitalMCMC``: NumPyro's models, assertions
and tolerances are kept; only the kernel changes.

Adaptations (each marked ``# adapted:`` where it happens):

- ``trajectory_length`` is passed to the kernels that have one (``hmc``, ``orbital``); MALA has
  no integration time.
- NumPyro's ``HMC(model, num_steps=5)`` warns because its ``trajectory_length`` defaults to
  2 pi; ours defaults to ``None``, so passing both is what is tested (a ``ValueError``, where
  NumPyro warns and lets ``num_steps`` win).
- ``test_none_trajectory_length``: with both ``None`` NumPyro raises; ours documents the
  default (a quarter period, pi / 2), so it checks the default instead.

Not run, and why:

- ``test_functional_*``, ``test_get_proposal_loc_and_scale``, ``test_numpy_delete``,
  ``test_SA_chain_gradient_free``: NumPyro's functional ``hmc`` API and SA internals, not a
  kernel's behaviour.
- ``test_improper_normal``'s ``max_tree_depth``: a NUTS option; the model is run without it.

The whole module runs under ``make test-slow`` only: with HMC alone its API tests take 360 s on
one core (76 passed, 2 xfailed, 2026-12-04), more than ``make test``'s budget allows; the NumPyro
surface those tests exercise is covered in ``make test`` by ``test_numpyro_surface.py``.
"""

import gc
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import device_get, jit, random
from jax.scipy.special import logit
from numpy.testing import assert_allclose
from numpyro.distributions.transforms import AffineTransform
from numpyro.infer import MCMC, init_to_value
from numpyro.infer.reparam import TransformReparam
from numpyro.util import is_prng_key

import ppl

pytestmark = pytest.mark.slow

KERNELS = ("hmc", "mala", "orbital")


@pytest.fixture(autouse=True)
def _free_compiled_code():
    """Every test here compiles its own MCMC; keeping them all in one process reaches the
    kernel's limit of memory mappings (a segmentation fault far from the cause)."""
    yield
    jax.clear_caches()
    gc.collect()


def make(kernel, model=None, *, trajectory_length=None, **kwargs):
    """The kernel ``kernel`` in place of NumPyro's HMC / NUTS."""
    if kernel == "orbital":
        cls = ppl.OrbitalMCMC
    else:
        cls = partial(ppl.InvolutiveMCMC, involution=kernel)
    if kernel != "mala" and trajectory_length is not None:  # adapted: MALA has no time
        kwargs["trajectory_length"] = trajectory_length
    return cls(model, **kwargs)


def _dirichlet_categorical(data):
    concentration = jnp.array([1.0, 1.0, 1.0])
    p_latent = numpyro.sample("p_latent", dist.Dirichlet(concentration))
    numpyro.sample("obs", dist.Categorical(p_latent), obs=data)
    return p_latent


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dense_mass", [False, True])
def test_unnormalized_normal_x64(kernel, dense_mass):
    true_mean, true_std = 1.0, 0.5
    num_warmup, num_samples = 1000, 8000

    def potential_fn(z):
        return 0.5 * jnp.sum(((z - true_mean) / true_std) ** 2)

    k = make(kernel, potential_fn=potential_fn, trajectory_length=8, dense_mass=dense_mass)
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(random.key(0), init_params=jnp.array(0.0))
    mcmc.print_summary()
    hmc_states = mcmc.get_samples()
    assert_allclose(jnp.mean(hmc_states), true_mean, rtol=0.07)
    assert_allclose(jnp.std(hmc_states), true_std, rtol=0.07)
    if "JAX_ENABLE_X64" in os.environ:
        assert hmc_states.dtype == jnp.float64


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_correlated_mvn(kernel):
    D = 5
    num_warmup, num_samples = 5000, 8000
    true_mean = 0.0
    a = jnp.tril(
        0.5 * jnp.fliplr(jnp.eye(D)) + 0.1 * jnp.exp(random.normal(random.key(0), shape=(D, D)))
    )
    true_cov = jnp.dot(a, a.T)
    true_prec = jnp.linalg.inv(true_cov)

    def potential_fn(z):
        return 0.5 * jnp.dot(z.T, jnp.dot(true_prec, z))

    mcmc = MCMC(
        make(kernel, potential_fn=potential_fn, dense_mass=True),
        num_warmup=num_warmup,
        num_samples=num_samples,
        progress_bar=False,
    )
    mcmc.run(random.key(0), init_params=jnp.zeros(D))
    samples = mcmc.get_samples()
    assert_allclose(jnp.mean(samples), true_mean, atol=0.02)
    assert np.sum(np.abs(np.cov(samples.T) - true_cov)) / D**2 < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_logistic_regression_x64(kernel):
    N, dim = 3000, 3
    key1, key2, key3 = random.split(random.key(0), 3)
    data = random.normal(key1, (N, dim))
    true_coefs = jnp.arange(1.0, dim + 1.0)
    logits = jnp.sum(true_coefs * data, axis=-1)
    labels = dist.Bernoulli(logits=logits).sample(key2)

    def model(labels):
        coefs = numpyro.sample("coefs", dist.Normal(jnp.zeros(dim), jnp.ones(dim)))
        logits = numpyro.deterministic("logits", jnp.sum(coefs * data, axis=-1))
        return numpyro.sample("obs", dist.Bernoulli(logits=logits), obs=labels)

    num_warmup, num_samples = 1000, 8000
    k = make(kernel, model, trajectory_length=8, find_heuristic_step_size=True)
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(key3, labels)
    mcmc.print_summary()
    samples = mcmc.get_samples()
    assert samples["logits"].shape == (num_samples, N)
    assert_allclose(jnp.mean(samples["coefs"], 0), true_coefs, atol=0.4)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("forward_mode_differentiation", [True, False])
def test_uniform_normal(kernel, forward_mode_differentiation):
    true_coef = 0.9
    num_warmup, num_samples = 1000, 1000

    def model(data):
        alpha = numpyro.sample("alpha", dist.Uniform(0, 1))
        with numpyro.handlers.reparam(config={"loc": TransformReparam()}):
            loc = numpyro.sample(
                "loc",
                dist.TransformedDistribution(dist.Uniform(0, 1), AffineTransform(0, alpha)),
            )
        numpyro.sample("obs", dist.Normal(loc, 0.1), obs=data)

    data = true_coef + random.normal(random.key(0), (1000,))
    k = make(kernel, model, forward_mode_differentiation=forward_mode_differentiation)
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.warmup(random.key(2), data, collect_warmup=True)
    assert mcmc.post_warmup_state is not None
    warmup_samples = mcmc.get_samples()
    mcmc.run(random.key(3), data)
    samples = mcmc.get_samples()
    assert len(warmup_samples["loc"]) == num_warmup
    assert len(samples["loc"]) == num_samples
    assert_allclose(jnp.mean(samples["loc"], 0), true_coef, atol=0.05)

    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(random.key(3), data)
    samples = mcmc.get_samples()
    assert len(samples["loc"]) == num_samples
    assert_allclose(jnp.mean(samples["loc"], 0), true_coef, atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_improper_normal(kernel):
    true_coef = 0.9

    def model(data):
        alpha = numpyro.sample("alpha", dist.Uniform(0, 1))
        with numpyro.handlers.reparam(config={"loc": TransformReparam()}):
            loc = numpyro.sample(
                "loc",
                dist.TransformedDistribution(
                    dist.Uniform(0, 1).mask(False), AffineTransform(0, alpha)
                ),
            )
        numpyro.sample("obs", dist.Normal(loc, 0.1), obs=data)

    data = true_coef + random.normal(random.key(0), (1000,))
    mcmc = MCMC(make(kernel, model), num_warmup=1000, num_samples=1000, progress_bar=False)
    mcmc.run(random.key(0), data)
    samples = mcmc.get_samples()
    assert_allclose(jnp.mean(samples["loc"], 0), true_coef, atol=0.007)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_beta_bernoulli_x64(kernel):
    num_warmup, num_samples = 500, 20000

    def model(data):
        alpha = jnp.array([1.1, 1.1])
        beta = jnp.array([1.1, 1.1])
        p_latent = numpyro.sample("p_latent", dist.Beta(alpha, beta))
        numpyro.sample("obs", dist.Bernoulli(p_latent), obs=data)
        return p_latent

    true_probs = jnp.array([0.9, 0.1])
    data = dist.Bernoulli(true_probs).sample(random.key(1), (1000,))
    k = make(kernel, model, trajectory_length=0.1)
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(random.key(2), data)
    mcmc.print_summary()
    samples = mcmc.get_samples()
    assert_allclose(jnp.mean(samples["p_latent"], 0), true_probs, atol=0.05)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dense_mass", [False, True])
def test_dirichlet_categorical_x64(kernel, dense_mass):
    num_warmup, num_samples = 100, 20000
    true_probs = jnp.array([0.1, 0.6, 0.3])
    data = dist.Categorical(true_probs).sample(random.key(1), (2000,))
    k = make(kernel, _dirichlet_categorical, trajectory_length=1.0, dense_mass=dense_mass)
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(random.key(2), data)
    samples = mcmc.get_samples()
    assert_allclose(jnp.mean(samples["p_latent"], 0), true_probs, atol=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("rho", [-0.7, 0.8])
def test_dense_mass(kernel, rho):
    num_warmup, num_samples = 20000, 10000
    true_cov = jnp.array([[10.0, rho], [rho, 0.1]])

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(2), covariance_matrix=true_cov))

    k = make(kernel, model, trajectory_length=2.0, dense_mass=True)
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(random.key(0))

    mass_matrix_sqrt = mcmc.last_state.adapt_state.mass_matrix_sqrt[("x",)]
    mass_matrix = jnp.matmul(mass_matrix_sqrt, jnp.transpose(mass_matrix_sqrt))
    estimated_cov = jnp.linalg.inv(mass_matrix)
    assert_allclose(estimated_cov, true_cov, rtol=0.10)

    samples = mcmc.get_samples()["x"]
    assert_allclose(jnp.mean(samples[:, 0]), jnp.array(0.0), atol=0.50)
    assert_allclose(jnp.mean(samples[:, 1]), jnp.array(0.0), atol=0.05)
    assert_allclose(jnp.mean(samples[:, 0] * samples[:, 1]), jnp.array(rho), atol=0.20)
    assert_allclose(jnp.var(samples, axis=0), jnp.array([10.0, 0.1]), rtol=0.20)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_change_point_x64(kernel):
    num_warmup, num_samples = 1000, 3000

    def model(data):
        alpha = 1 / jnp.mean(data.astype(np.float32))
        lambda1 = numpyro.sample("lambda1", dist.Exponential(alpha))
        lambda2 = numpyro.sample("lambda2", dist.Exponential(alpha))
        tau = numpyro.sample("tau", dist.Uniform(0, 1))
        lambda12 = jnp.where(jnp.arange(len(data)) < tau * len(data), lambda1, lambda2)
        numpyro.sample("obs", dist.Poisson(lambda12), obs=data)

    # fmt: off
    count_data = jnp.array([
        13, 24, 8, 24, 7, 35, 14, 11, 15, 11, 22, 22, 11, 57, 11, 19, 29, 6, 19, 12, 22,
        12, 18, 72, 32, 9, 7, 13, 19, 23, 27, 20, 6, 17, 13, 10, 14, 6, 16, 15, 7, 2,
        15, 15, 19, 70, 49, 7, 53, 22, 21, 31, 19, 11, 1, 20, 12, 35, 17, 23, 17, 4, 2,
        31, 30, 13, 27, 0, 39, 37, 5, 14, 13, 22])
    # fmt: on
    k = make(kernel, model, init_strategy=init_to_value(values={"lambda1": 1, "lambda2": 72}))
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(random.key(4), count_data)
    samples = mcmc.get_samples()
    tau_posterior = (samples["tau"] * len(count_data)).astype(jnp.int32)
    tau_values, counts = np.unique(tau_posterior, return_counts=True)
    assert tau_values[jnp.argmax(counts)] == 44


@pytest.mark.parametrize(
    "kernel, x64",
    [
        pytest.param(
            "hmc",
            False,
            marks=pytest.mark.xfail(
                strict=True,
                reason="float32 quantizes this potential in steps of 8 nats near the mode "
                "(gammaln(5e6 + 1) ~ 7e7 has ulp 8; see test_binomial_potential_is_quantized): "
                "the acceptance is then noise, dual averaging drives the step size to 1e-7 and "
                "a fixed-length trajectory of at most max_num_steps steps cannot move. NUTS "
                "passes by doubling its tree; in float64 (the test's name) HMC passes.",
            ),
        ),
        ("hmc", True),
        ("mala", False),
        ("orbital", False),
    ],
)
@pytest.mark.parametrize("with_logits", ["True", "False"])
def test_binomial_stable_x64(kernel, x64, with_logits):
    with jax.enable_x64(x64):
        _binomial_stable(kernel, with_logits)


def test_binomial_potential_is_quantized():
    """Why float32 HMC fails above: the potential does not change between eta = -7.1700 and
    -7.1702 and then drops by 8 nats."""
    from numpyro.infer.util import initialize_model

    def model(data):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        numpyro.sample("obs", dist.Binomial(data["n"], logits=logit(p)), obs=data["x"])

    _, pe, _, _ = initialize_model(random.key(0), model, model_args=({"n": 5000000, "x": 3849},))
    u = np.array([float(pe({"p": jnp.float32(e)})) for e in (-7.1700, -7.1702, -7.1703)])
    assert abs(u[1] - u[0]) < 1e-3 and abs(u[2] - u[1] + 8.0) < 0.1


def _binomial_stable(kernel, with_logits):
    num_warmup, num_samples = 200, 200

    def model(data):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        if with_logits:
            numpyro.sample("obs", dist.Binomial(data["n"], logits=logit(p)), obs=data["x"])
        else:
            numpyro.sample("obs", dist.Binomial(data["n"], probs=p), obs=data["x"])

    data = {"n": 5000000, "x": 3849}
    mcmc = MCMC(make(kernel, model), num_warmup=num_warmup, num_samples=num_samples,
                progress_bar=False)
    mcmc.run(random.key(2), data)
    samples = mcmc.get_samples()
    assert_allclose(jnp.mean(samples["p"], 0), data["x"] / data["n"], rtol=0.05)


@pytest.mark.parametrize("kernel", KERNELS)
def test_improper_prior(kernel):
    true_mean, true_std = 1.0, 2.0
    num_warmup, num_samples = 1000, 8000

    def model(data):
        mean = numpyro.sample("mean", dist.Normal(0, 1).mask(False))
        std = numpyro.sample("std", dist.ImproperUniform(dist.constraints.positive, (), ()))
        return numpyro.sample("obs", dist.Normal(mean, std), obs=data)

    data = dist.Normal(true_mean, true_std).sample(random.key(1), (2000,))
    mcmc = MCMC(make(kernel, model), num_warmup=num_warmup, num_samples=num_samples,
                progress_bar=False)
    mcmc.warmup(random.key(2), data)
    mcmc.run(random.key(2), data)
    samples = mcmc.get_samples()
    assert_allclose(jnp.mean(samples["mean"]), true_mean, rtol=0.05)
    assert_allclose(jnp.mean(samples["std"]), true_std, rtol=0.05)


@pytest.mark.parametrize("kernel", KERNELS)
def test_mcmc_progbar(kernel):
    """Reproducibility: warmup then run equals the same warmup then run with another bar."""
    true_mean, true_std = 1.0, 2.0
    num_warmup, num_samples = 10, 10

    def model(data):
        mean = numpyro.sample("mean", dist.Normal(0, 1).mask(False))
        std = numpyro.sample("std", dist.LogNormal(0, 1).mask(False))
        return numpyro.sample("obs", dist.Normal(mean, std), obs=data)

    data = dist.Normal(true_mean, true_std).sample(random.key(1), (2000,))
    k = make(kernel, model)
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples)
    mcmc.warmup(random.key(2), data)
    mcmc.run(random.key(3), data)
    mcmc1 = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc1.run(random.key(2), data)

    close = partial(assert_allclose, atol=1e-4, rtol=1e-4)
    with pytest.raises(AssertionError):
        jax.tree.all(jax.tree.map(close, mcmc1.get_samples(), mcmc.get_samples()))
    mcmc1.warmup(random.key(2), data)
    mcmc1.run(random.key(3), data)
    jax.tree.all(jax.tree.map(close, mcmc1.get_samples(), mcmc.get_samples()))

    def key_data(x):
        return random.key_data(x) if is_prng_key(x) else x

    jax.tree.all(
        jax.tree.map(
            close,
            jax.tree.map(key_data, mcmc1.post_warmup_state),
            jax.tree.map(key_data, mcmc.post_warmup_state),
        )
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("adapt_step_size", [True, False])
def test_diverging(kernel, adapt_step_size):
    data = random.normal(random.key(0), (1000,))

    def model(data):
        loc = numpyro.sample("loc", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(loc, 1), obs=data)

    k = make(kernel, model, step_size=10.0, adapt_step_size=adapt_step_size,
             adapt_mass_matrix=False)
    num_warmup = num_samples = 1000
    mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.warmup(random.key(1), data, extra_fields=["diverging"], collect_warmup=True)
    warmup_divergences = mcmc.get_extra_fields()["diverging"].sum()
    mcmc.run(random.key(2), data, extra_fields=["diverging"])
    num_divergences = warmup_divergences + mcmc.get_extra_fields()["diverging"].sum()
    if adapt_step_size:
        assert num_divergences <= num_warmup
    else:
        assert_allclose(num_divergences, num_warmup + num_samples)


@pytest.mark.parametrize("kernel", KERNELS)
def test_prior_with_sample_shape(kernel):
    data = {
        "J": 8,
        "y": jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
        "sigma": jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
    }

    def schools_model():
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        theta = numpyro.sample("theta", dist.Normal(mu, tau), sample_shape=(data["J"],))
        numpyro.sample("obs", dist.Normal(theta, data["sigma"]), obs=data["y"])

    num_samples = 500
    mcmc = MCMC(make(kernel, schools_model), num_warmup=500, num_samples=num_samples,
                progress_bar=False)
    mcmc.run(random.key(0))
    assert mcmc.get_samples()["theta"].shape == (num_samples, data["J"])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("num_chains", [1, 2])
@pytest.mark.parametrize("chain_method", ["parallel", "sequential", "vectorized"])
@pytest.mark.parametrize("progress_bar", [True, False])
@pytest.mark.filterwarnings("ignore:There are not enough devices:UserWarning")
def test_empty_model(kernel, num_chains, chain_method, progress_bar):
    def model():
        pass

    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=10, num_chains=num_chains,
                chain_method=chain_method, progress_bar=progress_bar)
    mcmc.run(random.key(0))
    assert mcmc.get_samples() == {}


def _chain_model_data():
    N, dim = 3000, 3
    data = random.normal(random.key(0), (N, dim))
    true_coefs = jnp.arange(1.0, dim + 1.0)
    logits = jnp.sum(true_coefs * data, axis=-1)
    labels = dist.Bernoulli(logits=logits).sample(random.key(1))

    def model(labels):
        coefs = numpyro.sample("coefs", dist.Normal(jnp.zeros(dim), jnp.ones(dim)))
        logits = jnp.sum(coefs * data, axis=-1)
        numpyro.deterministic("logits", logits)
        return numpyro.sample("obs", dist.Bernoulli(logits=logits), obs=labels)

    return model, labels, true_coefs, dim


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("use_init_params", [False, True])
@pytest.mark.parametrize("chain_method", ["parallel", "sequential", "vectorized"])
@pytest.mark.filterwarnings("ignore:There are not enough devices:UserWarning")
def test_chain(kernel, use_init_params, chain_method):
    model, labels, true_coefs, dim = _chain_model_data()
    num_chains = 2
    num_warmup, num_samples = 5000, 5000
    mcmc = MCMC(make(kernel, model), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, progress_bar=False)
    mcmc.chain_method = chain_method
    init_params = (
        None
        if not use_init_params
        else {"coefs": jnp.tile(jnp.ones(dim), num_chains).reshape(num_chains, dim)}
    )
    mcmc.run(random.key(2), labels, init_params=init_params)
    samples_flat = mcmc.get_samples()
    assert samples_flat["coefs"].shape[0] == num_chains * num_samples
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["coefs"].shape[:2] == (num_chains, num_samples)
    assert_allclose(jnp.mean(samples_flat["coefs"], 0), true_coefs, atol=0.21)
    device_get(samples_flat["coefs"].reshape(-1))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_chain_small(kernel, chain_method):
    """``test_chain`` with 500 + 500 iterations and 300 data points (for ``make test``), at
    NumPyro's tolerance; the reference is NumPyro's NUTS on the same data (the true
    coefficients are not the posterior mean of so few points)."""
    dim = 3
    data = random.normal(random.key(0), (300, dim))
    true_coefs = jnp.arange(1.0, dim + 1.0)
    labels = dist.Bernoulli(logits=jnp.sum(true_coefs * data, -1)).sample(random.key(1))

    def model(labels):
        coefs = numpyro.sample("coefs", dist.Normal(jnp.zeros(dim), jnp.ones(dim)))
        numpyro.sample("obs", dist.Bernoulli(logits=jnp.sum(coefs * data, -1)), obs=labels)

    mcmc = MCMC(make(kernel, model), num_warmup=500, num_samples=500, num_chains=2,
                chain_method=chain_method, progress_bar=False)
    init_params = {"coefs": jnp.ones((2, dim))}
    mcmc.run(random.key(2), labels, init_params=init_params)
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["coefs"].shape == (2, 500, dim)
    assert mcmc.get_samples()["coefs"].shape == (1000, dim)
    ref = MCMC(numpyro.infer.NUTS(model), num_warmup=500, num_samples=2000, progress_bar=False)
    ref.run(random.key(3), labels)
    assert_allclose(jnp.mean(mcmc.get_samples()["coefs"], 0),
                    jnp.mean(ref.get_samples()["coefs"], 0), atol=0.21)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["hmc", "orbital"])
@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_chain_inside_jit(kernel, chain_method):
    num_warmup, num_samples = 100, 2000
    rng_key = random.key(2)
    step_size = 1.0
    target_accept_prob = 0.8
    trajectory_length = 1.0

    @jit
    def get_samples(rng_key, data, step_size, trajectory_length, target_accept_prob):
        k = make(kernel, _dirichlet_categorical, step_size=step_size,
                 trajectory_length=trajectory_length, target_accept_prob=target_accept_prob)
        mcmc = MCMC(k, num_warmup=num_warmup, num_samples=num_samples, num_chains=2,
                    chain_method=chain_method, progress_bar=False)
        mcmc.run(rng_key, data)
        return mcmc.get_samples()

    true_probs = jnp.array([0.1, 0.6, 0.3])
    data = dist.Categorical(true_probs).sample(random.key(1), (2000,))
    samples = get_samples(rng_key, data, step_size, trajectory_length, target_accept_prob)
    assert_allclose(jnp.mean(samples["p_latent"], 0), true_probs, atol=0.02)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("chain_method", ["sequential", "parallel", "vectorized"])
@pytest.mark.parametrize("compile_args", [False, True])
@pytest.mark.filterwarnings("ignore:There are not enough devices:UserWarning")
def test_chain_jit_args_smoke(kernel, chain_method, compile_args):
    data1 = dist.Categorical(jnp.array([0.1, 0.6, 0.3])).sample(random.key(1), (50,))
    data2 = dist.Categorical(jnp.array([0.2, 0.4, 0.4])).sample(random.key(1), (50,))
    mcmc = MCMC(make(kernel, _dirichlet_categorical), num_warmup=2, num_samples=5,
                num_chains=2, chain_method=chain_method, jit_model_args=compile_args,
                progress_bar=False)
    mcmc.warmup(random.key(0), data1)
    mcmc.run(random.key(1), data1)
    mcmc.run(random.key(2), data2)


@pytest.mark.parametrize("kernel", KERNELS)
def test_extra_fields(kernel):
    def model():
        numpyro.sample("x", dist.Normal(0, 1), sample_shape=(5,))

    mcmc = MCMC(make(kernel, model), num_warmup=1000, num_samples=1000, progress_bar=False)
    mcmc.run(random.key(0), extra_fields=("num_steps", "adapt_state.step_size"))
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["x"].shape == (1, 1000, 5)
    stats = mcmc.get_extra_fields(group_by_chain=True)
    assert "num_steps" in stats
    assert stats["num_steps"].shape == (1, 1000)
    assert "adapt_state.step_size" in stats
    assert stats["adapt_state.step_size"].shape == (1, 1000)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("jit_args", [False, True])
@pytest.mark.parametrize("shape", [50, 100])
def test_reuse_mcmc_run(kernel, jit_args, shape):
    rng = np.random.default_rng(0)  # adapted: NumPyro's global np.random, seeded here
    y1 = rng.normal(3, 0.1, (100,))
    y2 = rng.normal(-3, 0.1, (shape,))

    def model(y_obs):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(3.0))
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y_obs)

    mcmc = MCMC(make(kernel, model), num_warmup=300, num_samples=500,
                jit_model_args=jit_args, progress_bar=False)
    mcmc.run(random.key(32), y1)
    mcmc.run(random.key(32), y2)
    assert_allclose(mcmc.get_samples()["mu"].mean(), -3.0, atol=0.1)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("jit_args", [False, True])
def test_model_with_multiple_exec_paths(kernel, jit_args):
    def model(a=None, b=None, z=None):
        int_term = numpyro.sample("a", dist.Normal(0.0, 0.2))
        x_term, y_term = 0.0, 0.0
        if a is not None:
            x = numpyro.sample("x", dist.HalfNormal(0.5))
            x_term = a * x
        if b is not None:
            y = numpyro.sample("y", dist.HalfNormal(0.5))
            y_term = b * y
        sigma = numpyro.sample("sigma", dist.Exponential(1.0))
        mu = int_term + x_term + y_term
        numpyro.sample("obs", dist.Normal(mu, sigma), obs=z)

    rng = np.random.default_rng(1)
    a = jnp.exp(rng.standard_normal(10))
    b = jnp.exp(rng.standard_normal(10))
    z = rng.standard_normal(10)
    mcmc = MCMC(make(kernel, model), num_warmup=20, num_samples=10, jit_model_args=jit_args,
                progress_bar=False)
    mcmc.run(random.key(1), a, b=None, z=z)
    assert set(mcmc.get_samples()) == {"a", "x", "sigma"}
    mcmc.run(random.key(2), a=None, b=b, z=z)
    assert set(mcmc.get_samples()) == {"a", "y", "sigma"}
    mcmc.run(random.key(3), a=a, b=b, z=z)
    assert set(mcmc.get_samples()) == {"a", "x", "y", "sigma"}


@pytest.mark.parametrize("kernel", KERNELS)
def test_mcmc_inside_jit(kernel):
    @jit
    def get_samples(rng_key, data):
        k = make(kernel, _dirichlet_categorical, step_size=1.0, trajectory_length=1.0,
                 target_accept_prob=0.8)
        mcmc = MCMC(k, num_warmup=5, num_samples=10, num_chains=1,
                    chain_method="sequential", progress_bar=False)
        mcmc.run(rng_key, data)
        return mcmc.get_samples()

    data = dist.Categorical(jnp.array([0.1, 0.6, 0.3])).sample(random.key(1), (100,))
    samples = get_samples(random.key(2), data)
    assert samples["p_latent"].shape == (10, 3)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "num_chains, chain_method", [(1, "parallel"), (2, "sequential"), (2, "vectorized")]
)
@pytest.mark.parametrize("progress_bar", [True, False])
def test_compile_warmup_run(kernel, num_chains, chain_method, progress_bar):
    def model():
        numpyro.sample("x", dist.Normal(0, 1))

    rng_key = random.key(0)
    num_samples = 10
    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=num_samples,
                num_chains=num_chains, chain_method=chain_method, progress_bar=progress_bar)
    mcmc.run(rng_key)
    expected_samples = mcmc.get_samples()["x"]

    mcmc._compile(rng_key)
    mcmc.warmup(rng_key)
    mcmc.run(mcmc.last_state.rng_key)
    actual_samples = mcmc.get_samples()["x"]
    assert_allclose(actual_samples, expected_samples)

    if num_chains > 1:
        mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=num_samples, num_chains=1,
                    progress_bar=progress_bar)
        rng_key = random.split(rng_key)[0]
        mcmc.run(rng_key)
        first_chain_samples = mcmc.get_samples()["x"]
        assert_allclose(actual_samples[:num_samples], first_chain_samples, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("batch_shape", [(), (4,)])
def test_trivial_dirichlet(kernel, batch_shape):
    def model():
        x = numpyro.sample("x", dist.Dirichlet(jnp.ones(1)).expand(batch_shape))
        return numpyro.sample("y", dist.Normal(x, 1), obs=2)

    num_samples = 10
    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=num_samples,
                progress_bar=False)
    mcmc.run(random.key(0))
    assert_allclose(mcmc.get_samples()["x"], jnp.ones((num_samples,) + batch_shape + (1,)))


@pytest.mark.parametrize("kernel", KERNELS)
def test_model_with_lift_handler(kernel):
    def model(data):
        c = numpyro.param("c", jnp.array(1.0), constraint=dist.constraints.positive)
        return numpyro.sample("x", dist.LogNormal(c, 1.0), obs=data)

    k = make(kernel, numpyro.handlers.lift(model, prior={"c": dist.Gamma(0.01, 0.01)}))
    mcmc = MCMC(k, num_warmup=10, num_samples=10, progress_bar=False)
    mcmc.run(random.key(1), jnp.exp(random.normal(random.key(0), (1000,))))


@pytest.mark.parametrize("kernel", KERNELS)
def test_structured_mass(kernel):
    def model(cov):
        w = numpyro.sample("w", dist.Normal(0, 1000).expand([2]).to_event(1))
        x = numpyro.sample("x", dist.Normal(0, 1000).expand([1]).to_event(1))
        y = numpyro.sample("y", dist.Normal(0, 1000).expand([1]).to_event(1))
        z = numpyro.sample("z", dist.Normal(0, 1000).expand([1]).to_event(1))
        wxyz = jnp.concatenate([w, x, y, z])
        numpyro.sample("obs", dist.MultivariateNormal(jnp.zeros(5), cov), obs=wxyz)

    w_cov = np.array([[1.5, 0.5], [0.5, 1.5]])
    xy_cov = np.array([[2.0, 1.0], [1.0, 3.0]])
    z_var = np.array([2.5])
    cov = np.zeros((5, 5))
    cov[:2, :2] = w_cov
    cov[2:4, 2:4] = xy_cov
    cov[4, 4] = z_var[0]

    mcmc = MCMC(make(kernel, model, dense_mass=[("w",), ("x", "y")]), num_warmup=1000,
                num_samples=1, progress_bar=False)
    mcmc.run(random.key(1), cov)
    inverse_mass_matrix = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert_allclose(inverse_mass_matrix[("w",)], w_cov, atol=0.5, rtol=0.5)
    assert_allclose(inverse_mass_matrix[("x", "y")], xy_cov, atol=0.5, rtol=0.5)
    assert_allclose(inverse_mass_matrix[("z",)], z_var, atol=0.5, rtol=0.5)

    mcmc = MCMC(make(kernel, model, dense_mass=[("w",), ("y", "x")]), num_warmup=1000,
                num_samples=1, progress_bar=False)
    mcmc.run(random.key(1), cov)
    inverse_mass_matrix = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert_allclose(inverse_mass_matrix[("w",)], w_cov, atol=0.5, rtol=0.5)
    assert_allclose(inverse_mass_matrix[("y", "x")], xy_cov[::-1, ::-1], atol=0.5, rtol=0.5)
    assert_allclose(inverse_mass_matrix[("z",)], z_var, atol=0.5, rtol=0.5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "dense_mass, expected_shapes",
    [
        (False, {("w", "x", "y", "z"): (16,)}),
        (True, {("w", "x", "y", "z"): (16, 16)}),
        ([("y", "w", "z", "x")], {("y", "w", "z", "x"): (16, 16)}),
        ([("x", "w"), ("y",)], {("x", "w"): (11, 11), ("y",): (4, 4), ("z",): (1,)}),
        ([("y",)], {("w", "x", "z"): (12,), ("y",): (4, 4)}),
        (
            [("z",), ("w",), ("y",)],
            {("w",): (10, 10), ("x",): (1,), ("y",): (4, 4), ("z",): (1, 1)},
        ),
    ],
)
def test_structured_mass_smoke(kernel, dense_mass, expected_shapes):
    def model():
        numpyro.sample("x", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(0, 1).expand([4]))
        numpyro.sample("w", dist.Normal(0, 1).expand([2, 5]))
        numpyro.sample("z", dist.Normal(0, 1).expand([1]))

    mcmc = MCMC(make(kernel, model, dense_mass=dense_mass), num_warmup=0, num_samples=1,
                progress_bar=False)
    mcmc.run(random.key(0))
    inverse_mm = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert {k: v.shape for k, v in inverse_mm.items()} == expected_shapes


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dense_mass", [[("x",)], False])
def test_initial_inverse_mass_matrix(kernel, dense_mass):
    def model():
        numpyro.sample("x", dist.Normal(0, 1).expand([3]))
        numpyro.sample("z", dist.Normal(0, 1).expand([2]))

    expected_mm = jnp.arange(1, 4.0)
    k = make(kernel, model, dense_mass=dense_mass, inverse_mass_matrix={("x",): expected_mm},
             adapt_mass_matrix=False)
    mcmc = MCMC(k, num_warmup=1, num_samples=1, progress_bar=False)
    mcmc.run(random.key(0))
    inverse_mass_matrix = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert set(inverse_mass_matrix.keys()) == {("x",), ("z",)}
    expected_mm = jnp.diag(expected_mm) if dense_mass else expected_mm
    assert_allclose(inverse_mass_matrix[("x",)], expected_mm)
    assert_allclose(inverse_mass_matrix[("z",)], jnp.ones(2))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dense_mass", [True, False])
def test_initial_inverse_mass_matrix_ndarray(kernel, dense_mass):
    def model():
        numpyro.sample("z", dist.Normal(0, 1).expand([2]))
        numpyro.sample("x", dist.Normal(0, 1).expand([3]))

    expected_mm = jnp.arange(1, 6.0)
    k = make(kernel, model, dense_mass=dense_mass, inverse_mass_matrix=expected_mm,
             adapt_mass_matrix=False)
    mcmc = MCMC(k, num_warmup=1, num_samples=1, progress_bar=False)
    mcmc.run(random.key(0))
    inverse_mass_matrix = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert set(inverse_mass_matrix.keys()) == {("x", "z")}
    expected_mm = jnp.diag(expected_mm) if dense_mass else expected_mm
    assert_allclose(inverse_mass_matrix[("x", "z")], expected_mm)


@pytest.mark.parametrize("kernel", KERNELS)
def test_loose_warning_for_missing_plate(kernel):
    def model():
        x = numpyro.sample("x", dist.Normal(0, 1))
        with numpyro.plate("N", 10):
            numpyro.sample("obs", dist.Normal(x, 1), obs=jnp.ones((5, 10)))

    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.warns(UserWarning, match="Missing a plate statement"):
        mcmc.run(random.key(1))


@pytest.mark.parametrize("kernel", KERNELS)
def test_init_strategy_substituted_model(kernel):
    def model():
        numpyro.sample("x", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(0, 1))

    subs_model = numpyro.handlers.substitute(model, data={"x": 10.0})
    mcmc = MCMC(make(kernel, subs_model), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.warns(UserWarning, match="skipping initialization"):
        mcmc.run(random.key(1))


@pytest.mark.parametrize("kernel", KERNELS)
def test_discrete_site_without_infer_enumerate(kernel):
    def model():
        numpyro.sample("x", dist.Bernoulli(0.5))

    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.warns(FutureWarning, match="enumerated sites"):
        mcmc.run(random.key(0))


@pytest.mark.parametrize("kernel", KERNELS)
def test_vectorized_sampling_zero_sized(kernel):
    J = 8
    n = 0
    sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def eight_schools(J, sigma):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        with numpyro.plate("J", J):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("scores", dist.Normal(theta, sigma), sample_shape=(n,))

    mcmc = MCMC(make(kernel, eight_schools), num_warmup=50, num_samples=100, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(random.key(0), J, sigma, extra_fields=("potential_energy",))
    assert mcmc.get_samples()["scores"].shape == (200, 0, 8)


def _regression_model_data():
    rng = np.random.default_rng(2)  # adapted: NumPyro's global np.random, seeded here
    data = {"x": rng.random(10)}
    data["y"] = data["x"] + rng.random(10) * 0.1

    def model(data):
        w = numpyro.sample("w", dist.Normal(10, 1))
        b = numpyro.sample("b", dist.Normal(1, 1))
        sigma = numpyro.sample("sigma", dist.Gamma(1, 2))
        with numpyro.plate("size", np.size(data["y"])):
            numpyro.sample("obs", dist.Normal(w * data["x"] + b, sigma), obs=data["y"])

    return model, data


def test_fixed_num_steps():
    model, data = _regression_model_data()
    # adapted: NumPyro warns "If both" and lets num_steps win; ours refuses the pair
    with pytest.raises(ValueError, match="not both"):
        make("hmc", model, num_steps=5, trajectory_length=2.0)
    mcmc = MCMC(make("hmc", model, num_steps=5), num_samples=1000, num_warmup=1000,
                num_chains=1, progress_bar=False)
    mcmc.run(random.key(0), data, extra_fields=("num_steps",))
    num_steps_list = np.array(mcmc.get_extra_fields()["num_steps"])
    assert all(step == 5 for step in num_steps_list)


@pytest.mark.parametrize("num_steps", [None, 10])
def test_none_trajectory_length(num_steps):
    model, data = _regression_model_data()
    k = make("hmc", model, num_steps=num_steps, trajectory_length=None)
    if num_steps is None:
        # adapted: NumPyro raises "At least one of"; ours defaults to a quarter period
        assert k._trajectory_length == pytest.approx(np.pi / 2)
        return
    mcmc = MCMC(k, num_samples=1000, num_warmup=1000, num_chains=1, progress_bar=False)
    rng_key = random.key(0)
    mcmc.run(rng_key, data)
    mcmc.run(rng_key, data, extra_fields=("num_steps",))
    num_steps_list = np.array(mcmc.get_extra_fields()["num_steps"])
    assert all(step == num_steps for step in num_steps_list)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("remove_sites", [("~z.a", "~z.b"), ("~z.a", "~z.a")])
def test_remove_sites(kernel, remove_sites):
    def model():
        numpyro.sample("a", dist.Normal())
        numpyro.sample("b", dist.Normal())

    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=10, progress_bar=False)
    mcmc.run(random.key(0), extra_fields=remove_sites)
    samps = mcmc.get_samples()
    assert all([site[3:] not in samps for site in remove_sites])


@pytest.mark.parametrize("kernel", KERNELS)
def test_extra_fields_include_unconstrained_samples(kernel):
    def model():
        numpyro.sample("x", dist.HalfNormal(1))

    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=10, progress_bar=False)
    mcmc.run(random.key(0), extra_fields=("z.x",))
    assert_allclose(mcmc.get_samples()["x"], jnp.exp(mcmc.get_extra_fields()["z.x"]),
                    rtol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_all_deterministic(kernel):
    def model1():
        numpyro.deterministic("x", 1.0)

    def model2():
        numpyro.deterministic("x", jnp.array([1.0, 2.0]))

    num_samples = 10
    for model, shape in {model1: (), model2: (2,)}.items():
        mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=num_samples,
                    progress_bar=False)
        mcmc.run(random.key(0))
        assert mcmc.get_samples()["x"].shape == (num_samples,) + shape


@pytest.mark.parametrize("kernel", KERNELS)
def test_empty_summary(kernel):
    def model():
        pass

    mcmc = MCMC(make(kernel, model), num_warmup=10, num_samples=10, progress_bar=False)
    mcmc.run(random.key(0))
    mcmc.print_summary()
