"""ppl.bdmc: the sandwich brackets log Z of simulated and user data (conjugate models)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from ppl.bdmc import BDMCResult, bdmc
from ppl.smc import FrozenSchedule
from tests.ppl import oracles

R = 40
ALPHA = 0.01
SLACK = np.log(2 * R / ALPHA)


def normal_model(n, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.5, 2.0))
    with numpyro.plate("n", n):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def regression_model(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.5).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ w, 0.5).to_event(1), obs=y)


@pytest.fixture(scope="module")
def simulated():
    # the data site given as a keyword set to None, as in ppl.bdmc(key, model, *args, y=None)
    res = bdmc(jax.random.PRNGKey(0), normal_model, 10, y=None, num_particles=16, num_runs=R)
    truth = np.array(
        [oracles.normal_normal(y, 0.5, 2.0, 1.0)[0] for y in np.asarray(res.data["y"])]
    )
    return res, truth


def test_simulated_data_bracketed(simulated):
    """Per data set log Z is known exactly; exp(L - log Z) and exp(log Z - U) have mean 1."""
    res, truth = simulated
    assert isinstance(res, BDMCResult) and res.data["y"].shape == (R, 10)
    assert res.latents["mu"].shape == (R,)
    L = np.asarray(res.lower, np.float64) - truth
    U = np.asarray(res.upper, np.float64) - truth
    assert abs(oracles.lme_z(L, 0.0)) < 4  # z-score: log-mean-exp(L - log Z) vs 0
    assert abs(oracles.lme_z(-U, 0.0)) < 4  # z-score: -log-mean-exp(log Z - U) vs 0
    assert L.max() <= SLACK and U.min() >= -SLACK  # distribution-free
    gap = np.asarray(res.gap, np.float64)
    np.testing.assert_allclose(gap, (U - L), atol=1e-4)
    assert gap.mean() / (gap.std(ddof=1) / np.sqrt(R)) > -3  # z-score: E[U] >= E[L]


def test_summary_simulated_keeps_data_sets_apart(simulated):
    """Simulated mode: no pooled bracket across data sets (they have different log Z_r); the
    per-data-set brackets hold every exact log Z_r (distribution-free, prob >= 1 - alpha)."""
    res, truth = simulated
    assert res.simulated
    s = res.summary(alpha=0.05)
    lo, (lo_a, lo_b) = s["lower_mean"]
    assert lo_a < lo < lo_b and s["num_runs"] == R and s["simulated"]
    assert s["max_lower_bound"] is None and s["lower_lme"] is None
    assert s["upper_lme"] is None and s["min_upper_bound"] is None
    b = s["brackets"]
    assert b.shape == (R, 2)
    np.testing.assert_allclose(b[:, 0], np.asarray(res.lower) - np.log(2 * R / 0.05), rtol=1e-6)
    assert np.all((b[:, 0] <= truth) & (truth <= b[:, 1]))
    # the log Z_r really differ across data sets (pooling them would be wrong)
    assert truth.std() > 3 * float(np.mean(res.gap))
    gap, (g_a, g_b) = s["gap_mean"]
    assert g_a < gap < g_b


def test_user_data_with_exact_posterior_samples():
    """User data and exact posterior draws, with a fixed schedule (no pilot run)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 2))
    y = X @ np.array([0.8, -1.0]) + 0.5 * rng.normal(size=12)
    log_z, mean, cov = oracles.linear_regression(X, y, 1.5, 0.5)
    post = rng.multivariate_normal(mean, cov, size=R)
    res = bdmc(
        jax.random.PRNGKey(2),
        regression_model,
        jnp.asarray(X),
        num_particles=16,
        num_runs=R,
        data={"y": jnp.asarray(y)},
        posterior_samples={"w": jnp.asarray(post, jnp.float32)},
        schedule=FrozenSchedule(jnp.linspace(0, 1, 6) ** 2, jnp.full(5, 0.2), jnp.ones((5, 2))),
    )
    L, U = np.asarray(res.lower, np.float64), np.asarray(res.upper, np.float64)
    assert not res.simulated
    s = res.summary(alpha=0.05)  # one data set: the pooled bracket holds log Z
    assert s["max_lower_bound"] == pytest.approx(float(L.max()) - np.log(2 * R / 0.05), rel=1e-5)
    assert s["max_lower_bound"] <= log_z <= s["min_upper_bound"]
    assert s["upper_lme"] <= float(U.max()) + 1e-5 and "brackets" not in s
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score
    assert abs(oracles.lme_z(-U, -log_z)) < 4  # z-score
    assert L.max() <= log_z + SLACK and U.min() >= log_z - SLACK
    assert L.mean() <= log_z + 3 * L.std(ddof=1) / np.sqrt(R)  # z-score: E[L] <= log Z
    assert U.mean() >= log_z - 3 * U.std(ddof=1) / np.sqrt(R)  # z-score: E[U] >= log Z


def test_ais_reverse_ais_single_particle(simulated):
    """num_particles=1: forward AIS and reverse AIS with the frozen schedule of the pilot."""
    res, _ = simulated
    ais = bdmc(
        jax.random.PRNGKey(3),
        normal_model,
        10,
        num_particles=1,
        num_runs=8,
        observed="y",
        schedule=res.schedule,
    )
    truth = np.array(
        [oracles.normal_normal(y, 0.5, 2.0, 1.0)[0] for y in np.asarray(ais.data["y"])]
    )
    assert np.all(np.asarray(ais.lower) - truth <= np.log(2 * 8 / ALPHA))
    assert np.all(np.asarray(ais.upper) - truth >= -np.log(2 * 8 / ALPHA))


def test_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="observed="):
        bdmc(key, normal_model, 10)
    with pytest.raises(TypeError, match="cannot be called"):
        bdmc(key, normal_model, 10, z=None)  # not an argument of the model

    def two_args(n, y=None, scale=None):
        mu = numpyro.sample("mu", dist.Normal(0.5, 2.0))
        with numpyro.plate("n", n):
            numpyro.sample("y", dist.Normal(mu, 1.0 if scale is None else scale), obs=y)

    with pytest.raises(ValueError, match="y=None"):
        bdmc(key, two_args, 10, scale=None)  # None, but not a sample site
    with pytest.raises(ValueError, match="not a sample site"):
        bdmc(key, normal_model, 10, observed="z")
    with pytest.raises(ValueError, match="already observed"):
        bdmc(key, normal_model, 10, observed="y", y=jnp.zeros(10))
    with pytest.raises(ValueError, match="posterior_samples"):
        bdmc(key, normal_model, 10, data={"y": jnp.zeros(10)})
    with pytest.raises(ValueError, match="lacks"):
        bdmc(key, normal_model, 10, data={"y": jnp.zeros(10)}, posterior_samples={"nu": 0.0})
    with pytest.raises(ValueError, match="num_runs"):
        bdmc(key, normal_model, 10, observed="y", num_runs=0)


def test_bdmc_stays_callable_after_first_use(monkeypatch):
    """ppl.bdmc is the function on every call, also after `import ppl.bdmc` set the submodule."""
    import importlib

    import ppl

    module = importlib.import_module("ppl.bdmc")
    calls = []
    monkeypatch.setattr(module, "bdmc", lambda *a, **k: calls.append((a, k)) or "result")
    assert ppl.bdmc(1, y=None) == "result"
    assert ppl.bdmc(2) == "result"  # a second call (was "'module' object is not callable")
    assert calls == [((1,), {"y": None}), ((2,), {})]
    assert ppl.BDMCResult is module.BDMCResult
