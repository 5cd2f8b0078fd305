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


# ------------------------------------------------------------------ structured mass matrices
def _four_sites():
    numpyro.sample("x", dist.Normal(0, 1))
    numpyro.sample("y", dist.Normal(0, 1).expand([4]))
    numpyro.sample("w", dist.Normal(0, 1).expand([2, 5]))
    numpyro.sample("z", dist.Normal(0, 1).expand([1]))


@pytest.mark.parametrize(
    "dense_mass",
    [
        False,
        [("x", "w"), ("y",)],
        [("z",), ("w",), ("y",)],
        # 13-26 s each on 2 cores: the three above cover all-diagonal, dense + diagonal + the
        # remaining sites, and dense blocks in unsorted order
        pytest.param(True, marks=pytest.mark.slow),
        pytest.param([("y", "w", "z", "x")], marks=pytest.mark.slow),
        pytest.param([("y",)], marks=pytest.mark.slow),
    ],
    ids=str,
)
def test_structured_mass_blocks_match_numpyro(dense_mass):
    """adapt_state.inverse_mass_matrix has NumPyro HMC's keys and block shapes."""

    def shapes(kernel):
        mcmc = MCMC(kernel, num_warmup=0, num_samples=1, progress_bar=False)
        mcmc.run(jax.random.key(0))
        return {k: v.shape for k, v in mcmc.last_state.adapt_state.inverse_mass_matrix.items()}

    expected = shapes(numpyro.infer.HMC(_four_sites, dense_mass=dense_mass))
    for name in KERNELS:
        assert shapes(KERNELS[name](_four_sites, dense_mass=dense_mass)) == expected, name


def test_flat_inverse_mass_matrix_places_blocks_in_ravel_order():
    from ppl.adapter import flat_inverse_mass_matrix

    z = {"b": jnp.zeros(2), "a": jnp.zeros(()), "c": jnp.zeros(1)}  # ravel order: a, b0, b1, c
    # the block ("c", "b") covers c, then b0 and b1
    xy = jnp.array([[2.0, 0.5, 0.1], [0.5, 3.0, 0.2], [0.1, 0.2, 4.0]])
    imm = {("c", "b"): xy, ("a",): jnp.array([7.0])}
    got = np.asarray(flat_inverse_mass_matrix(imm, z))
    order = [3, 1, 2]  # c, b0, b1 in ravel positions
    want = np.zeros((4, 4))
    want[0, 0] = 7.0
    want[np.ix_(order, order)] = np.asarray(xy)
    np.testing.assert_array_equal(got, want)
    diag = flat_inverse_mass_matrix({("c", "b"): jnp.arange(1.0, 4.0), ("a",): jnp.ones(1)}, z)
    np.testing.assert_array_equal(np.asarray(diag), [1.0, 2.0, 3.0, 1.0])


def _blocks(cov):
    w = numpyro.sample("w", dist.Normal(0, 1000).expand([2]).to_event(1))
    x = numpyro.sample("x", dist.Normal(0, 1000).expand([1]).to_event(1))
    y = numpyro.sample("y", dist.Normal(0, 1000).expand([1]).to_event(1))
    z = numpyro.sample("z", dist.Normal(0, 1000).expand([1]).to_event(1))
    numpyro.sample(
        "obs", dist.MultivariateNormal(jnp.zeros(5), cov), obs=jnp.concatenate([w, x, y, z])
    )


@pytest.mark.parametrize("kernel", ["hmc", "orbital"])
def test_structured_mass_adapts_each_block_and_samples_the_target(kernel):
    """The posterior is N(0, cov) with cov block-diagonal over (w), (x, y), (z): the adapted
    blocks estimate the blocks (NumPyro's test tolerance, rtol = atol = 0.5) and the draws have
    the right variances (z < 4 with the ESS, 4 chains x 1000)."""
    cov = np.zeros((5, 5))
    cov[:2, :2] = [[1.5, 0.5], [0.5, 1.5]]
    cov[2:4, 2:4] = [[2.0, 1.0], [1.0, 3.0]]
    cov[4, 4] = 2.5
    mcmc = MCMC(
        KERNELS[kernel](_blocks, dense_mass=[("w",), ("y", "x")]),
        num_warmup=1000,
        num_samples=1000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(1), cov)
    imm = {k: np.asarray(v)[0] for k, v in mcmc.last_state.adapt_state.inverse_mass_matrix.items()}
    np.testing.assert_allclose(imm[("w",)], cov[:2, :2], atol=0.5, rtol=0.5)
    np.testing.assert_allclose(imm[("y", "x")], cov[2:4, 2:4][::-1, ::-1], atol=0.5, rtol=0.5)
    np.testing.assert_allclose(imm[("z",)], [2.5], atol=0.5, rtol=0.5)
    s = mcmc.get_samples(group_by_chain=True)
    draws = np.concatenate([np.asarray(s[k], np.float64) for k in "wxyz"], -1)
    for i in range(5):
        assert abs(_z(draws[..., i] ** 2, cov[i, i])) < 4, i


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_dict_initial_inverse_mass_matrix_is_kept_and_exact(kernel):
    """A fixed dict inverse mass matrix (no adaptation) is used as given, and the chain still
    targets N(0, diag(1, 4, 9)) x N(0, 1): second moments z < 4."""

    def model():
        numpyro.sample("x", dist.Normal(0, jnp.array([1.0, 2.0, 3.0])))
        numpyro.sample("z", dist.Normal(0, 1).expand([2]))

    given = jnp.array([1.0, 4.0, 9.0])
    mcmc = MCMC(
        KERNELS[kernel](model, inverse_mass_matrix={("x",): given}, adapt_mass_matrix=False),
        num_warmup=200,
        num_samples=2000,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(3))
    imm = mcmc.last_state.adapt_state.inverse_mass_matrix
    np.testing.assert_array_equal(np.asarray(imm[("x",)])[0], given)
    np.testing.assert_array_equal(np.asarray(imm[("z",)])[0], jnp.ones(2))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    for i, var in enumerate([1.0, 4.0, 9.0]):
        assert abs(_z(x[..., i] ** 2, var)) < 4


def test_bad_mass_matrix_arguments():
    with pytest.raises(TypeError, match="list of tuples of site names"):
        ppl.InvolutiveMCMC(_four_sites, dense_mass=["x"])
    mcmc = MCMC(
        ppl.InvolutiveMCMC(_four_sites, inverse_mass_matrix={("y",): jnp.ones(3)}),
        num_warmup=1,
        num_samples=1,
        progress_bar=False,
    )
    with pytest.raises(ValueError, match=r"\('y',\)\] has shape \(3,\).*4 unconstrained"):
        mcmc.run(jax.random.key(0))
    mcmc = MCMC(
        ppl.InvolutiveMCMC(_four_sites, inverse_mass_matrix={("q",): jnp.ones(3)}),
        num_warmup=1,
        num_samples=1,
        progress_bar=False,
    )
    with pytest.raises(ValueError, match="latent site names"):
        mcmc.run(jax.random.key(0))


# ------------------------------------------------------------------ forward-mode gradients
def _while_loop_model():
    """y = 3 x computed by a while loop (reverse mode cannot differentiate it); the posterior
    of x given y_obs = 1.5 is N(0.45, 1 / 10)."""
    x = numpyro.sample("x", dist.Normal(0, 1))
    _, y = jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] + x), (0, 0.0))
    numpyro.sample("obs", dist.Normal(y, 1.0), obs=1.5)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_forward_mode_differentiation(kernel):
    with pytest.raises(ValueError, match="while_loop"):
        MCMC(
            KERNELS[kernel](_while_loop_model), num_warmup=2, num_samples=2, progress_bar=False
        ).run(jax.random.key(0))
    mcmc = MCMC(
        KERNELS[kernel](_while_loop_model, forward_mode_differentiation=True),
        num_warmup=300,
        num_samples=2000,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(4))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    assert abs(_z(x, 0.45)) < 4
    assert abs(_z((x - 0.45) ** 2, 0.1)) < 4
