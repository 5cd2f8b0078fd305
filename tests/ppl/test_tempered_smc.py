"""ppl.TemperedSMC against closed-form log Z and posteriors (conjugate models)."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from kernels.smc import annealing
from ppl.smc import FrozenSchedule, TemperedSMC, split_model
from tests.ppl import oracles

R = 40  # independent runs per check (vmapped: one compilation)
ALPHA = 0.01


# --------------------------------------------------------------------------- models
def normal_model(n, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.5, 2.0))
    numpyro.deterministic("two_mu", 2 * mu)
    with numpyro.plate("n", n):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def regression_model(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.5).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ w, 0.5).to_event(1), obs=y)


def poisson_model(n, y=None):
    lam = numpyro.sample("lam", dist.Gamma(2.0, 0.5))  # rate parametrization
    with numpyro.plate("n", n):
        numpyro.sample("y", dist.Poisson(lam), obs=y)


RNG = np.random.default_rng(0)
Y_NORMAL = RNG.normal(1.3, 1.0, 10)
X_REG = RNG.normal(size=(15, 3))
Y_REG = X_REG @ np.array([1.0, -0.5, 0.3]) + 0.5 * RNG.normal(size=15)
Y_POIS = RNG.poisson(6.0, 8).astype(np.float32)


def _keys(seed, r=R):
    return jax.random.split(jax.random.PRNGKey(seed), r)


def _mean_z(per_run, truth):
    """z-score of the average over runs of a per-run statistic (runs are independent)."""
    per_run = np.asarray(per_run, np.float64)
    return (per_run.mean(0) - truth) / (per_run.std(0, ddof=1) / np.sqrt(per_run.shape[0]))


@pytest.fixture(scope="module")
def normal_runs():
    smc = TemperedSMC(normal_model, blackjax.hmc, num_particles=200, num_mcmc_steps=2)
    return smc, smc.run(_keys(0), 10, y=jnp.asarray(Y_NORMAL))


# --------------------------------------------------------------------------- model split
def test_split_model_prior_and_likelihood_in_unconstrained_space():
    with jax.enable_x64(True):
        dens = split_model(poisson_model, (8,), {"y": jnp.asarray(Y_POIS)})
        u = jnp.array([0.7])  # lam = exp(0.7)
        lam = np.exp(0.7)
        prior = dist.Gamma(2.0, 0.5).log_prob(lam) + 0.7  # + log |d lam / du|
        lik = dist.Poisson(lam).log_prob(jnp.asarray(Y_POIS)).sum()
        np.testing.assert_allclose(dens.log_prior(u), prior, rtol=1e-12)
        np.testing.assert_allclose(dens.log_likelihood(u), lik, rtol=1e-12)
        assert dens.observed == ("y",) and dens.latent == ("lam",)


# --------------------------------------------------------------------------- log Z, lower
def test_normal_log_Z_unbiased_and_posterior_moments(normal_runs):
    _, res = normal_runs
    log_z, post_mean, post_sd = oracles.normal_normal(Y_NORMAL, 0.5, 2.0, 1.0)
    L = np.asarray(res.log_Z, np.float64)
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score: log-mean-exp vs log Z
    assert L.max() <= log_z + np.log(2 * R / ALPHA)  # distribution-free (Markov + union)
    mu = np.asarray(res.samples["mu"], np.float64)
    assert abs(_mean_z(mu.mean(1), post_mean)) < 4  # z-score
    assert abs(_mean_z(mu.std(1), post_sd)) < 4  # z-score
    np.testing.assert_allclose(res.samples["two_mu"], 2 * res.samples["mu"], rtol=1e-6)
    assert np.all(np.asarray(res.num_steps) >= 2)


def test_regression_log_Z_and_posterior_mean():
    """Default move (kernels.involutive.hmc) on a fixed sigmoid schedule (kernels.smc.annealing)
    with step size and mass matrix adapted between temperatures."""
    smc = TemperedSMC(
        regression_model, "hmc", num_particles=200, num_mcmc_steps=2, schedule=annealing.sigmoid(12)
    )
    res = smc.run(_keys(1), jnp.asarray(X_REG), y=jnp.asarray(Y_REG))
    log_z, post_mean, post_cov = oracles.linear_regression(X_REG, Y_REG, 1.5, 0.5)
    L = np.asarray(res.log_Z, np.float64)
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score
    assert np.all(np.asarray(res.num_steps) == 12)
    w = np.asarray(res.samples["w"], np.float64)  # (R, N, 3)
    assert np.all(np.abs(_mean_z(w.mean(1), post_mean)) < 4)  # z-scores
    assert np.all(np.abs(_mean_z(w.var(1), np.diag(post_cov))) < 4)  # z-scores


def test_asymmetric_poisson_gamma():
    """Asymmetric likelihood and a log-transformed latent (Jacobian in the prior)."""
    smc = TemperedSMC(poisson_model, blackjax.hmc, num_particles=200, num_mcmc_steps=2)
    res = smc.run(_keys(2), 8, y=jnp.asarray(Y_POIS))
    log_z, a, b = oracles.gamma_poisson(Y_POIS, 2.0, 0.5)
    L = np.asarray(res.log_Z, np.float64)
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score
    lam = np.asarray(res.samples["lam"], np.float64)
    assert abs(_mean_z(lam.mean(1), a / b)) < 4  # z-score: Gamma(a, b) posterior mean
    assert abs(_mean_z(lam.var(1), a / b**2)) < 4  # z-score: posterior variance


def test_mala_move_on_a_fixed_schedule():
    """Another kernel as the move (BlackJAX MALA, no mass matrix), fixed schedule."""
    frozen = FrozenSchedule(jnp.linspace(0, 1, 9) ** 2, jnp.full(8, 0.03), jnp.ones((8, 1)))
    smc = TemperedSMC(
        poisson_model, blackjax.mala, num_particles=100, num_mcmc_steps=3, schedule=frozen
    )
    res = smc.run(_keys(3), 8, y=jnp.asarray(Y_POIS))
    log_z, a, b = oracles.gamma_poisson(Y_POIS, 2.0, 0.5)
    assert abs(oracles.lme_z(np.asarray(res.log_Z, np.float64), log_z)) < 4  # z-score
    assert np.all(np.asarray(res.acceptance_rate)[:, -1] > 0.3)


# --------------------------------------------------------------------------- upper bound
FROZEN = FrozenSchedule(jnp.linspace(0, 1, 4), jnp.full(3, 0.5), jnp.ones((3, 1)))
SIZES = (2, 32)


@pytest.fixture(scope="module")
def bounds():
    """Lower (forward SMC) and upper (conditional SMC from exact posterior draws) log Z, R runs
    for each N in SIZES, on a deliberately short fixed schedule (3 temperatures, 1 HMC step)."""
    _, post_mean, post_sd = oracles.normal_normal(Y_NORMAL, 0.5, 2.0, 1.0)
    y = jnp.asarray(Y_NORMAL)
    refs = jnp.asarray(np.random.default_rng(5).normal(post_mean, post_sd, R), jnp.float32)
    out = {}
    for i, n in enumerate(SIZES):
        smc = TemperedSMC(
            normal_model, blackjax.hmc, num_particles=n, num_mcmc_steps=1, schedule=FROZEN
        )

        def both(kk, m, smc=smc):
            k1, k2 = jax.random.split(kk)
            return smc.run(k1, 10, y=y).log_Z, smc.run(k2, 10, y=y, reference={"mu": m}).log_Z

        lo, up = jax.vmap(both)(_keys(10 + i), refs)
        out[n] = (np.asarray(lo, np.float64), np.asarray(up, np.float64))
    return out


def test_conditional_smc_upper_bound_brackets_log_Z(bounds):
    log_z = oracles.normal_normal(Y_NORMAL, 0.5, 2.0, 1.0)[0]
    L, U = bounds[SIZES[-1]]
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score: log-mean-exp(L) vs log Z
    assert abs(oracles.lme_z(-U, -log_z)) < 4  # z-score: -log-mean-exp(-U) vs log Z
    assert U.min() >= log_z - np.log(2 * R / ALPHA)  # distribution-free
    assert L.max() <= log_z + np.log(2 * R / ALPHA)
    gap = U.mean() - L.mean()
    se = np.sqrt(U.var(ddof=1) / R + L.var(ddof=1) / R)
    assert gap / se > -3  # z-score: E[U] >= E[L]


def test_bounds_monotone_in_num_particles(bounds):
    """E[L_N] non-decreasing and E[U_N] non-increasing in N (fixed schedule)."""
    log_z = oracles.normal_normal(Y_NORMAL, 0.5, 2.0, 1.0)[0]
    (l_a, u_a), (l_b, u_b) = bounds[SIZES[0]], bounds[SIZES[1]]
    assert (l_b.mean() - l_a.mean()) / np.sqrt(l_a.var(ddof=1) / R + l_b.var(ddof=1) / R) > -3  # z
    assert (u_a.mean() - u_b.mean()) / np.sqrt(u_a.var(ddof=1) / R + u_b.var(ddof=1) / R) > -3  # z
    g_a, g_b = u_a - l_a, u_b - l_b  # the gap shrinks: the check above has power
    assert (g_a.mean() - g_b.mean()) / np.sqrt(g_a.var(ddof=1) / R + g_b.var(ddof=1) / R) > 3  # z
    assert l_a.mean() < log_z < u_a.mean()


def test_asymmetric_bounds_on_a_frozen_pilot_schedule():
    """Poisson-Gamma (asymmetric likelihood, log-transformed latent): a pilot's adaptive
    schedule, step sizes and mass matrices, frozen (``result.frozen()``) and shared by R
    forward runs (lower) and R conditional runs from exact Gamma posterior draws (upper)."""
    log_z, a, b = oracles.gamma_poisson(Y_POIS, 2.0, 0.5)
    y = jnp.asarray(Y_POIS)
    pilot = TemperedSMC(poisson_model, blackjax.hmc, num_particles=200, num_mcmc_steps=2)
    frozen = pilot.run(jax.random.PRNGKey(20), 8, y=y).frozen()
    assert frozen.betas.shape[0] >= 3
    smc = TemperedSMC(
        poisson_model, blackjax.hmc, num_particles=16, num_mcmc_steps=2, schedule=frozen
    )
    lams = jnp.asarray(np.random.default_rng(3).gamma(a, 1 / b, R), jnp.float32)
    L = np.asarray(smc.run(_keys(21), 8, y=y).log_Z, np.float64)
    up = jax.vmap(lambda k, lam: smc.run(k, 8, y=y, reference={"lam": lam}).log_Z)
    U = np.asarray(up(_keys(22), lams), np.float64)
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score: log-mean-exp(L) vs log Z
    assert abs(oracles.lme_z(-U, -log_z)) < 4  # z-score: -log-mean-exp(-U) vs log Z
    assert L.max() <= log_z + np.log(2 * R / ALPHA) and U.min() >= log_z - np.log(2 * R / ALPHA)
    se = np.sqrt(U.var(ddof=1) / R + L.var(ddof=1) / R)
    assert (U.mean() - L.mean()) / se > -3  # z-score: E[U] >= E[L]


# --------------------------------------------------------------------------- outputs, errors
def test_arviz_conversion(normal_runs):
    _, runs = normal_runs
    res = jax.tree.map(lambda x: x[0], runs)
    idata = res.to_arviz()
    assert set(idata.posterior.data_vars) == {"mu", "two_mu"}
    assert idata.posterior["mu"].shape == (1, 200)
    frozen = res.frozen()
    assert (
        frozen.betas[0] == 0 and frozen.betas[-1] == 1 and len(frozen.step_sizes) == res.num_steps
    )


def test_errors():
    y = jnp.asarray(Y_NORMAL)
    smc = TemperedSMC(normal_model, blackjax.hmc, num_particles=10)
    with pytest.raises(ValueError, match="no observed site"):
        smc.run(jax.random.PRNGKey(0), 10)
    with pytest.raises(TypeError, match="cannot be called"):
        smc.run(jax.random.PRNGKey(0), 10, z=y)
    with pytest.raises(ValueError, match="FrozenSchedule"):
        smc.run(jax.random.PRNGKey(0), 10, y=y, reference={"mu": 0.0})

    def discrete(y=None):
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    with pytest.raises(ValueError, match="discrete"):
        TemperedSMC(discrete, blackjax.hmc, num_particles=10).run(jax.random.PRNGKey(0), y=1.0)
    with pytest.raises(ValueError, match="increase strictly"):
        TemperedSMC(normal_model, blackjax.hmc, schedule=[0.0, 0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="FrozenSchedule"):
        TemperedSMC(normal_model, blackjax.hmc, num_particles=1)
    with pytest.raises(TypeError, match="build_kernel"):
        TemperedSMC(normal_model, kernel=object())

    def positive(y=None):
        rate = numpyro.sample("rate", dist.Gamma(2.0, 1.0))
        numpyro.sample("y", dist.Exponential(rate), obs=y)

    with pytest.raises(ValueError, match="-inf at all 16 draws"):
        TemperedSMC(positive, blackjax.hmc, num_particles=8).run(
            jax.random.PRNGKey(0), y=-jnp.ones(3)
        )

    def nan_lik(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        numpyro.factor("penalty", jnp.log(mu - 1e6))  # NaN: log of a negative number

    with pytest.raises(ValueError, match="NaN"):
        TemperedSMC(nan_lik, blackjax.hmc, num_particles=8).run(jax.random.PRNGKey(0), y=y)
    with pytest.raises(ValueError, match="'y' has 1 non-finite value"):
        smc.run(jax.random.PRNGKey(0), 10, y=y.at[3].set(jnp.nan))
    frozen = FrozenSchedule(jnp.linspace(0, 1, 3), jnp.full(2, 0.5), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="missing"):
        TemperedSMC(normal_model, blackjax.hmc, schedule=frozen, num_particles=4).run(
            jax.random.PRNGKey(0), 10, y=y, reference={"nu": 0.0}
        )


def test_sharded_equals_unsharded(bounds):
    """Particles split over the 4 forced host devices: same seed, same result."""
    n = SIZES[-1]
    assert n % jax.device_count() == 0
    smc = TemperedSMC(
        normal_model, blackjax.hmc, num_particles=n, num_mcmc_steps=1, schedule=FROZEN, shard=True
    )
    k1, _ = jax.random.split(_keys(10 + len(SIZES) - 1)[0])
    res = smc.run(k1, 10, y=jnp.asarray(Y_NORMAL))
    np.testing.assert_allclose(res.log_Z, bounds[n][0][0], rtol=1e-5)
    assert len(res.positions.sharding.device_set) == jax.device_count()
