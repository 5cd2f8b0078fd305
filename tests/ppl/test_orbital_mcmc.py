"""ppl.OrbitalMCMC inside numpyro.infer.MCMC: closed-form posteriors, chain methods, arviz,
extra fields, Rao-Blackwellized estimates, the -1e4 offset and errors.

Tolerances are z-scores from arviz's ESS for the mean: for the mean, (mean - m) / (s / sqrt(ESS));
for the sd, (s / s_true - 1) over its delta-method standard error
sd((x - mean)^2) / (2 s^2 sqrt(ESS of (x - mean)^2)).
"""

import math

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

from ppl import OrbitalMCMC


def _ess(x):
    return float(az.ess(np.asarray(x, np.float64), method="mean"))


def check(draws, mean, sd, min_ess=100):
    """z of the mean and of the sd of draws (chains, draws) against the truth."""
    x = np.asarray(draws, np.float64)
    ess = _ess(x)
    m, s = x.mean(), x.std()
    sq = (x - m) ** 2
    z_mean = (m - mean) / (sd / math.sqrt(ess))
    z_sd = (s / sd - 1.0) / (sq.std() / (2.0 * s**2 * math.sqrt(_ess(sq))))
    assert ess > min_ess, ess
    assert abs(z_mean) < 4, z_mean  # z-score
    assert abs(z_sd) < 4, z_sd  # z-score


def run(kernel, *args, num_warmup=300, num_samples=1000, num_chains=4, method="vectorized", **kw):
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=method,
        progress_bar=kw.pop("progress_bar", False),
    )
    mcmc.run(jax.random.key(kw.pop("seed", 0)), *args, **kw)
    return mcmc


# ------------------------------------------- Bayesian linear regression with a scale (closed form)
_X = np.array(jax.random.normal(jax.random.key(1), (30, 3)))
_X[:, 2] += 0.8 * _X[:, 0]  # correlated design
PRIOR_SD, NOISE_SD = 2.0, 0.5
_Y = _X @ np.array([1.0, -0.5, 0.3]) + NOISE_SD * np.asarray(
    jax.random.normal(jax.random.key(2), (30,))
)
_POST_COV = np.linalg.inv(np.eye(3) / PRIOR_SD**2 + _X.T @ _X / NOISE_SD**2)
_POST_MEAN = _POST_COV @ _X.T @ _Y / NOISE_SD**2


def regression(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, PRIOR_SD).expand([3]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, NOISE_SD), obs=y)


@pytest.fixture(scope="module")
def vectorized():
    kernel = OrbitalMCMC(regression, trajectory_length=2.0, dense_mass=True)
    fields = ("num_steps", "accept_prob", "diverging", "info.weights", "info.orbit.position")
    return run(kernel, _X, _Y, extra_fields=fields)


def test_regression_closed_form(vectorized):
    beta = np.asarray(vectorized.get_samples(group_by_chain=True)["beta"])
    assert beta.shape == (4, 1000, 3)
    for i in range(3):
        check(beta[..., i], _POST_MEAN[i], math.sqrt(_POST_COV[i, i]))


def test_extra_fields_and_rao_blackwell(vectorized):
    fields = vectorized.get_extra_fields()
    steps = np.asarray(fields["num_steps"])
    # window of n points = ceil(T / eps) + 1 at the adapted step size: n - 1 gradients, fixed
    # after warmup
    assert np.all(steps >= 1) and np.all(steps <= 127)
    assert len(np.unique(steps)) <= 4  # one window length per chain
    assert 0.5 < float(np.mean(fields["accept_prob"])) <= 1.0
    assert not np.any(fields["diverging"])
    w = np.asarray(fields["info.weights"])
    assert w.shape == (4000, 128)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    # unused slots carry no weight
    assert np.all(w[np.arange(4000), steps + 1] == 0)
    rb = vectorized.sampler.rao_blackwell(fields, model_args=(_X, _Y))
    assert rb["beta"].shape == (4000, 3)
    rb_group = np.asarray(rb["beta"]).reshape(4, 1000, 3)
    for i in range(3):  # the orbit averages estimate the same posterior mean
        x = rb_group[..., i]
        z = (x.mean() - _POST_MEAN[i]) / (x.std() / math.sqrt(_ess(x)))
        assert abs(z) < 4, z  # z-score
    with pytest.raises(KeyError, match="info.orbit.position"):
        vectorized.sampler.rao_blackwell({"info.weights": w})


def test_arviz(vectorized):
    idata = az.from_numpyro(vectorized)
    assert idata.posterior["beta"].shape == (4, 1000, 3)
    assert float(az.rhat(idata)["beta"].max()) < 1.05


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_chain_methods_and_fixed_period(method):
    """A fixed period, the deterministic index shift with persistent momentum, independent
    sampling from the weights; sequential and parallel chains."""
    kernel = OrbitalMCMC(regression, period=6, index_shift=2, alpha=0.5, rotation=None)
    mcmc = run(kernel, _X, _Y, num_chains=2, method=method, extra_fields=("num_steps",))
    assert np.all(np.asarray(mcmc.get_extra_fields()["num_steps"]) == 5)
    beta = np.asarray(mcmc.get_samples(group_by_chain=True)["beta"])
    for i in range(3):
        check(beta[..., i], _POST_MEAN[i], math.sqrt(_POST_COV[i, i]))


# ------------------------------------------------------------ constrained sites (closed form)
_Z = np.asarray(jax.random.normal(jax.random.key(3), (10,))) * 0.7
_GAMMA_A, _GAMMA_B = 3.0 + 5.0, 2.0 + 0.5 * float(np.sum(_Z**2))


def constrained(z):
    tau = numpyro.sample("tau", dist.Gamma(3.0, 2.0))
    numpyro.sample("z", dist.Normal(0.0, 1.0 / jnp.sqrt(tau)), obs=z)
    numpyro.sample("s", dist.HalfNormal(2.0))  # prior only


def test_constrained_sites_closed_form():
    """Gamma-normal precision and a HalfNormal prior through NumPyro's transforms."""
    mcmc = run(OrbitalMCMC(constrained), _Z, num_samples=1500)
    draws = mcmc.get_samples(group_by_chain=True)
    check(draws["tau"], _GAMMA_A / _GAMMA_B, math.sqrt(_GAMMA_A) / _GAMMA_B)
    check(draws["s"], 2.0 * math.sqrt(2 / math.pi), 2.0 * math.sqrt(1 - 2 / math.pi))


# ----------------------------------------------------------------------------------- robustness
def offset_normal():
    numpyro.sample("x", dist.Normal(1.0, 3.0))
    numpyro.factor("offset", -1e4)


def test_log_density_offset_float32():
    """log p offset by -1e4 in float32: weights in log space, the right mean and sd."""
    mcmc = run(OrbitalMCMC(offset_normal), num_samples=1500, num_chains=2, progress_bar=True)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert x.dtype == jnp.float32
    check(x, 1.0, 3.0)
    assert float(mcmc.last_state.potential_energy[0]) > 1e4 - 100


def test_potential_fn_and_errors():
    def potential(x):
        return 0.5 * jnp.sum(x**2)

    mcmc = run(OrbitalMCMC(potential_fn=potential), num_chains=2, init_params=jnp.zeros((2, 2)))
    check(np.asarray(mcmc.get_samples(group_by_chain=True))[..., 0], 0.0, 1.0)
    with pytest.raises(ValueError, match="not both"):
        OrbitalMCMC(regression, period=4, trajectory_length=1.0)
    with pytest.raises(ValueError, match="period must be an integer >= 2"):
        OrbitalMCMC(regression, period=1)
    with pytest.raises(ValueError, match="trajectory_length must be positive"):
        OrbitalMCMC(regression, trajectory_length=-1.0)
    with pytest.raises(ValueError, match="index_shift must be 'random' or an integer"):
        OrbitalMCMC(regression, index_shift="fixed")
    with pytest.raises(ValueError, match="alpha .momentum persistence. must lie in"):
        OrbitalMCMC(regression, alpha=1.0)
    with pytest.warns(DeprecationWarning, match="use alpha"):
        assert OrbitalMCMC(regression, momentum_persistence=0.5) is not None
    with pytest.raises(TypeError, match="not both"):
        OrbitalMCMC(regression, alpha=0.5, momentum_persistence=0.5)
    with pytest.raises(ValueError, match="rotation must lie in"):
        OrbitalMCMC(regression, rotation=1.5)
    with pytest.raises(ValueError, match="max_period"):
        OrbitalMCMC(regression, max_period=1)
    with pytest.raises(ValueError, match="exactly one of"):
        OrbitalMCMC()
