"""ppl.InvolutiveMCMC: every built-in involution against closed-form posteriors in NumPyro.

Tolerances are z-scores from the effective sample size (numpyro.diagnostics): for the mean,
(mean - m) / (s / sqrt(ESS)); for the standard deviation, (s / s_true - 1) divided by its
delta-method standard error sd((x - mean)^2) / (2 s^2 sqrt(ESS of (x - mean)^2)).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.stats import norm
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

import kernels.involutive
from ppl import InvolutiveMCMC
from ppl.involutive import BUILTIN_INVOLUTIONS


def moment_z(draws, mean, sd):
    """(z of the mean, z of the sd, ESS) for draws of shape (chains, draws)."""
    x = np.asarray(draws, np.float64)
    ess = float(effective_sample_size(x))
    m, s = x.mean(), x.std()
    sq = (x - m) ** 2
    ess_sq = float(effective_sample_size(sq))
    z_mean = (m - mean) / (sd / math.sqrt(ess))
    z_sd = (s / sd - 1.0) / (sq.std() / (2.0 * s**2 * math.sqrt(ess_sq)))
    return z_mean, z_sd, ess


def check(draws, mean, sd, min_ess=100):
    z_mean, z_sd, ess = moment_z(draws, mean, sd)
    assert ess > min_ess, ess
    assert abs(z_mean) < 4, z_mean  # z-score
    assert abs(z_sd) < 4, z_sd  # z-score


def sample(kernel, *args, num_warmup=300, num_samples=1000, num_chains=4, seed=0, **kw):
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=kw.pop("progress_bar", False),
    )
    mcmc.run(jax.random.key(seed), *args, **kw)
    return mcmc


# ----------------------------------------------- Bayesian linear regression (closed form)
_X = np.array(jax.random.normal(jax.random.key(1), (30, 3)))
_X[:, 2] += 0.8 * _X[:, 0]  # correlated design
_BETA = np.array([1.0, -0.5, 0.3])
PRIOR_SD, NOISE_SD = 2.0, 0.5
_Y = _X @ _BETA + NOISE_SD * np.asarray(jax.random.normal(jax.random.key(2), (30,)))
_POST_COV = np.linalg.inv(np.eye(3) / PRIOR_SD**2 + _X.T @ _X / NOISE_SD**2)
_POST_MEAN = _POST_COV @ _X.T @ _Y / NOISE_SD**2


def regression(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, PRIOR_SD).expand([3]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, NOISE_SD), obs=y)


@pytest.mark.parametrize("involution", BUILTIN_INVOLUTIONS)
def test_linear_regression_closed_form(involution):
    kw = {"trajectory_length": 1.3} if involution == "hmc" else {}
    mcmc = sample(
        InvolutiveMCMC(regression, involution=involution, **kw),
        _X,
        _Y,
        num_samples=2000 if involution == "rwm" else 1000,
        extra_fields=("num_steps", "accept_prob"),
    )
    beta = np.asarray(mcmc.get_samples(group_by_chain=True)["beta"])
    for i in range(3):
        check(beta[..., i], _POST_MEAN[i], math.sqrt(_POST_COV[i, i]))
    fields = mcmc.get_extra_fields()
    expected_grads = {"hmc": None, "mala": 1, "irreversible_mala": 1, "rwm": 0}[involution]
    if expected_grads is not None:
        assert np.all(fields["num_steps"] == expected_grads)
    else:  # L = ceil(T / eps) >= 1 leapfrog steps
        assert np.all(fields["num_steps"] >= 1)


# ---------------------------------------------------------- constrained sites (closed form)
_ALPHA = np.array([2.0, 3.0, 4.0])
_COUNTS = np.array([5.0, 1.0, 7.0])
_Z = np.asarray(jax.random.normal(jax.random.key(3), (10,))) * 0.7
_GAMMA_A, _GAMMA_B = 3.0 + 5.0, 2.0 + 0.5 * float(np.sum(_Z**2))


def constrained(counts, z):
    p = numpyro.sample("p", dist.Dirichlet(jnp.asarray(_ALPHA)))
    numpyro.sample("counts", dist.Multinomial(int(_COUNTS.sum()), p), obs=counts)
    tau = numpyro.sample("tau", dist.Gamma(3.0, 2.0))
    numpyro.sample("z", dist.Normal(0.0, 1.0 / jnp.sqrt(tau)), obs=z)
    numpyro.sample("s", dist.HalfNormal(2.0))  # prior only


def test_constrained_sites_closed_form():
    """Dirichlet-multinomial, Gamma-normal precision and a HalfNormal prior (stick-breaking,
    exp transforms and their Jacobians through NumPyro's initialize_model)."""
    mcmc = sample(
        InvolutiveMCMC(constrained, involution="hmc", trajectory_length=1.3),
        _COUNTS,
        _Z,
        num_samples=1500,
    )
    draws = mcmc.get_samples(group_by_chain=True)
    a = _ALPHA + _COUNTS
    a0 = a.sum()
    for i in range(3):
        sd = math.sqrt(a[i] * (a0 - a[i]) / (a0**2 * (a0 + 1)))
        check(np.asarray(draws["p"])[..., i], a[i] / a0, sd)
    check(draws["tau"], _GAMMA_A / _GAMMA_B, math.sqrt(_GAMMA_A) / _GAMMA_B)
    check(draws["s"], 2.0 * math.sqrt(2 / math.pi), 2.0 * math.sqrt(1 - 2 / math.pi))


# ------------------------------------------------------------------------------ robustness
def offset_normal():
    numpyro.sample("x", dist.Normal(1.0, 3.0))
    numpyro.factor("offset", -1e4)


def test_log_density_offset_and_progress_bar():
    """A log density shifted by -1e4 (the MH ratio only sees differences); progress bar on."""
    mcmc = MCMC(
        InvolutiveMCMC(offset_normal, involution="hmc", trajectory_length=1.3),
        num_warmup=300,
        num_samples=1500,
        num_chains=1,
        progress_bar=True,
    )
    mcmc.run(jax.random.key(4))
    check(mcmc.get_samples(group_by_chain=True)["x"], 1.0, 3.0)
    assert float(mcmc.last_state.potential_energy) > 1e4 - 100


@pytest.mark.parametrize("involution", ["hmc", "rwm"])
def test_nan_region_is_rejected(involution):
    """U(x) = x^2/2 for x < 1 and NaN beyond: the chain targets the truncated normal."""

    def potential(x):
        return jnp.where(x < 1.0, 0.5 * x**2, jnp.nan)

    kw = {"trajectory_length": 1.3} if involution == "hmc" else {}
    mcmc = sample(
        InvolutiveMCMC(potential_fn=potential, involution=involution, **kw),
        init_params=jnp.zeros(4),
        num_samples=1500,
        extra_fields=("diverging",),
    )
    x = np.asarray(mcmc.get_samples(group_by_chain=True))
    assert np.all(np.isfinite(x)) and np.all(x < 1.0)
    ratio = float(norm.pdf(1.0) / norm.cdf(1.0))
    check(x, -ratio, math.sqrt(1.0 - ratio - ratio**2))


# --------------------------------------------------------------- factories and errors
def test_user_factory():
    """Any (logdensity_fn, step_size, inverse_mass_matrix) -> SamplingAlgorithm factory."""

    def factory(logdensity_fn, step_size, inverse_mass_matrix):
        return kernels.involutive.hmc(logdensity_fn, step_size, inverse_mass_matrix, 3)

    kernel = InvolutiveMCMC(regression, involution=factory)
    assert kernel.involution is factory
    mcmc = sample(kernel, _X, _Y, extra_fields=("num_steps",))
    assert np.all(mcmc.get_extra_fields()["num_steps"] == 3)
    beta = np.asarray(mcmc.get_samples(group_by_chain=True)["beta"])
    for i in range(3):
        check(beta[..., i], _POST_MEAN[i], math.sqrt(_POST_COV[i, i]))


def test_errors():
    with pytest.raises(ValueError, match="Unknown involution 'nuts'.*'hmc', 'mala'"):
        InvolutiveMCMC(regression, involution="nuts")
    with pytest.raises(TypeError, match="built-in name or a kernel factory"):
        InvolutiveMCMC(regression, involution=3)
    with pytest.raises(ValueError, match="not both"):
        InvolutiveMCMC(regression, num_steps=3, trajectory_length=1.0)
    with pytest.raises(ValueError, match="involution='hmc' only"):
        InvolutiveMCMC(regression, involution="mala", num_steps=3)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        InvolutiveMCMC(regression, num_steps=0)
    with pytest.raises(ValueError, match="alpha must lie in"):
        InvolutiveMCMC(regression, involution="irreversible_mala", alpha=1.0)
    with pytest.raises(ValueError, match="exactly one of"):
        InvolutiveMCMC()
    kernel = InvolutiveMCMC(potential_fn=lambda x: jnp.sum(x**2))
    with pytest.raises(ValueError, match="pass `init_params`"):
        kernel.init(jax.random.key(0), 10, None, (), {})


def test_example_runs():
    """examples/numpyro_involutive.py (--quick) runs and its chains mix."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "numpyro_involutive.py"
    spec = importlib.util.spec_from_file_location("numpyro_involutive_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--quick"])
    for summary in results.values():
        assert (summary["r_hat"] < 1.1).all(), summary


def _two_sites():
    w = numpyro.sample("w", dist.Normal().expand([3]))
    s = numpyro.sample("s", dist.HalfNormal())
    numpyro.sample("y", dist.Normal(w.sum(), s), obs=1.0)


@pytest.mark.parametrize("kernel_cls", ["involutive"])
def test_init_params_errors_name_the_site(kernel_cls):
    """Wrong-shaped, incomplete or extra init_params: a ValueError naming the site and the
    expected shape (the check sits in ppl.adapter, shared by InvolutiveMCMC and OrbitalMCMC)."""
    import ppl

    def mcmc(**kw):
        kernel = (
            ppl.InvolutiveMCMC(_two_sites)
            if kernel_cls == "involutive"
            else (ppl.OrbitalMCMC(_two_sites))
        )
        return MCMC(kernel, num_warmup=2, num_samples=2, progress_bar=False, **kw)

    vec = {"num_chains": 2, "chain_method": "vectorized"}
    cases = [
        (
            {},
            {"w": jnp.zeros(2), "s": 0.0},
            r"init_params\['w'\] has shape \(2,\); expected \(3,\)",
        ),
        ({}, {"w": jnp.zeros(3)}, r"missing \['s'\].*'w': \(3,\), 's': \(\)"),
        ({}, {"w": jnp.zeros(3), "s": 0.0, "t": 1.0}, r"not latent sites of the model \['t'\]"),
        (vec, {"w": jnp.zeros(3), "s": jnp.zeros(2)}, r"expected \(2, 3\).*leading axis of 2"),
        ({}, [0.0, 0.0], "must be a dict"),
    ]
    for kw, params, match in cases:
        with pytest.raises(ValueError, match=match):
            mcmc(**kw).run(jax.random.key(0), init_params=params)
    # the check itself accepts the right shapes (with the chain axis for vectorized chains)
    from ppl.adapter import _check_init_params

    want = {"w": jnp.zeros((2, 3)), "s": jnp.zeros(2)}
    _check_init_params({"w": np.ones((2, 3)), "s": np.zeros(2)}, want, vectorized=True)


# ----------------------------------------------- default HMC trajectory length
_RNG = np.random.default_rng(0)
_XL = _RNG.normal(size=(200, 4))
_XL[:, 1] += 0.9 * _XL[:, 0]
_XL[:, 3] = 5 * _XL[:, 3] + 3  # an unscaled predictor
_YL = (_RNG.uniform(size=200) < 1 / (1 + np.exp(-(_XL @ [1.0, -0.5, 0.3, 0.1] - 0.5)))).astype(
    float
)


def logistic(X, y):
    b = numpyro.sample("b", dist.Normal(0, 3).expand([4]))
    a = numpyro.sample("a", dist.Normal(0, 3))
    numpyro.sample("y", dist.Bernoulli(logits=X @ b + a), obs=y)


def _min_ess(trajectory_length, dense_mass):
    kw = {} if trajectory_length is None else {"trajectory_length": trajectory_length}
    mcmc = MCMC(
        InvolutiveMCMC(logistic, dense_mass=dense_mass, **kw),
        num_warmup=500,
        num_samples=1000,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), _XL, _YL)
    s = mcmc.get_samples(group_by_chain=True)
    cols = [np.asarray(s["b"][..., j]) for j in range(4)] + [np.asarray(s["a"])]
    return min(float(effective_sample_size(c)) for c in cols)


def test_default_trajectory_length_is_a_quarter_period():
    from ppl.involutive import DEFAULT_TRAJECTORY_LENGTH

    assert DEFAULT_TRAJECTORY_LENGTH == pytest.approx(math.pi / 2)
    assert InvolutiveMCMC(logistic)._trajectory_length == DEFAULT_TRAJECTORY_LENGTH


@pytest.mark.slow
def test_default_trajectory_length_mixes_on_logistic_regression():
    """Default T = pi/2 with a dense mass matrix: min ESS over 5 coefficients > 600 of 2000
    (seen 983 in float32, 1406 in float64; NumPyro's T = 2 pi gives about 200)."""
    assert _min_ess(None, dense_mass=True) > 600


@pytest.mark.slow
@pytest.mark.parametrize("dense_mass", [True, False])
def test_numpyro_trajectory_length_mixes_worse(dense_mass):
    """Negative control: T = 2 pi (a full period of the whitened Gaussian) mixes far worse
    (float64: min ESS 206 dense, 36 diagonal, against 1406 and 1108 with the default)."""
    default = _min_ess(None, dense_mass)
    assert default > 600
    assert _min_ess(2 * math.pi, dense_mass) < default / 2


def test_mala_short_warmup_moves():
    """MALA's h scales as eps^2 / 2, so its default searches a step size (NumPyro's heuristic on
    eps = sqrt(2 h)): after 10 warmup steps on 2000 observations the chain moves. Without the
    search it ends at h = 1.8e-3 with acceptance 0.00 on every draw (log ratio about -1300)."""

    def model(data):
        mean = numpyro.sample("mean", dist.Normal(0, 1).mask(False))
        std = numpyro.sample("std", dist.LogNormal(0, 1).mask(False))
        numpyro.sample("obs", dist.Normal(mean, std), obs=data)

    data = dist.Normal(1.0, 2.0).sample(jax.random.key(1), (2000,))
    accept = {}
    for search in (None, False):
        mcmc = MCMC(
            InvolutiveMCMC(model, involution="mala", find_heuristic_step_size=search),
            num_warmup=10,
            num_samples=20,
            progress_bar=False,
        )
        mcmc.run(jax.random.key(2), data, extra_fields=("accept_prob",))
        accept[search] = float(mcmc.get_extra_fields()["accept_prob"].mean())
    assert accept[None] > 0.1, accept
    assert accept[False] < 0.01, accept  # the failure the default avoids


def test_mala_heuristic_step_size_is_in_h_units():
    """The search tunes the leapfrog step eps; MALA's kernel gets h = eps^2 / 2."""
    to_lf, from_lf = InvolutiveMCMC(lambda: None, involution="mala").leapfrog_step_size_map()
    assert float(to_lf(0.02)) == pytest.approx(0.2)
    assert float(from_lf(0.2)) == pytest.approx(0.02)
    to_lf, _ = InvolutiveMCMC(lambda: None, involution="hmc").leapfrog_step_size_map()
    assert to_lf(0.3) == 0.3
