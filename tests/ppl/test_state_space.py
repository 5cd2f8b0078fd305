"""ppl.ParticleFilter against the Kalman filter and the HMM forward algorithm."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers

from ppl.state_space import ParticleFilter
from tests.ppl import oracles

R = 100  # independent runs (vmapped)
ALPHA = 0.01
SLACK = np.log(2 * R / ALPHA)  # distribution-free bracketing slack

# --------------------------------------------------------------------------- linear Gaussian
A, Q, RR, M0, S0, T = 0.9, 0.5, 0.7, 0.3, 1.0, 20


def lg_transition(x, y):
    x = numpyro.sample("x", dist.Normal(A * x, Q))
    numpyro.sample("y", dist.Normal(x, RR), obs=y)
    return x, x


def lg_init():
    return numpyro.sample("x0", dist.Normal(M0, S0))


def _lg_data():
    rng = np.random.default_rng(0)
    x, ys = M0 + S0 * rng.normal(), []
    for _ in range(T):
        x = A * x + Q * rng.normal()
        ys.append(x + RR * rng.normal())
    return np.asarray(ys)


YS = _lg_data()
KF = dict(
    A=np.eye(1) * A,
    Q=np.eye(1) * Q**2,
    C=np.eye(1),
    R=np.eye(1) * RR**2,
    m0=[M0],
    P0=np.eye(1) * S0**2,
)


@pytest.fixture(scope="module")
def lg_runs():
    pf = ParticleFilter(lg_transition, lg_init, num_particles=64)
    keys = jax.random.split(jax.random.PRNGKey(0), R)
    lower = pf.run(keys, jnp.asarray(YS))
    paths = oracles.kalman_ffbs(np.random.default_rng(1), YS[:, None], num_samples=R, **KF)[..., 0]
    upper = pf.run(
        jax.random.split(jax.random.PRNGKey(1), R),
        jnp.asarray(YS),
        reference={"x": jnp.asarray(paths[:, 1:], jnp.float32)},
        reference_init={"x0": jnp.asarray(paths[:, 0], jnp.float32)},
    )
    return lower, upper


def test_kalman_log_Z_bracketed(lg_runs):
    lower, upper = lg_runs
    log_z = oracles.kalman_filter(YS[:, None], **KF)[0]
    L, U = np.asarray(lower.log_Z, np.float64), np.asarray(upper.log_Z, np.float64)
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score: log-mean-exp(L) vs log Z
    assert abs(oracles.lme_z(-U, -log_z)) < 4  # z-score: -log-mean-exp(-U) vs log Z
    assert L.max() <= log_z + SLACK and U.min() >= log_z - SLACK  # distribution-free
    assert L.mean() < log_z < U.mean()  # Jensen, both directions (gap ~ 1 nat here)
    assert lower.ess.shape == (R, T + 1) and np.all(np.asarray(lower.ess) <= 64 + 1e-3)


def test_filtering_mean_matches_kalman(lg_runs):
    lower, _ = lg_runs
    _, means, _, _, _ = oracles.kalman_filter(YS[:, None], **KF)
    w = np.exp(np.asarray(lower.log_weights, np.float64))  # (R, N)
    est = (w * np.asarray(lower.carry, np.float64)).sum(-1)  # (R,) filtering means at T
    z = (est.mean() - means[-1, 0]) / (est.std(ddof=1) / np.sqrt(R))
    assert abs(z) < 4  # z-score
    np.testing.assert_allclose(lower.latents["x"], lower.carry)  # the transition returns x


def test_exact_twist_and_proposal_give_exact_log_Z_in_float64():
    """Fully adapted proposal with the exact look-ahead twist: every weight is constant, so
    lower = upper = log Z (x_0 fixed)."""
    with jax.enable_x64(True):
        P, h, c, S, hy = oracles.scalar_lgssm_backward(YS, A, Q, RR)
        P, h, c, S, hy = (jnp.asarray(v) for v in (P, h, c, S, hy))

        def transition(x, inp):
            y, _ = inp
            x = numpyro.sample("x", dist.Normal(A * x, Q))
            numpyro.sample("y", dist.Normal(x, RR), obs=y)
            return x, x

        def proposal(x, inp):
            _, t = inp
            numpyro.sample("x", dist.Normal((A * x / Q**2 + hy[t]) / S[t], 1 / jnp.sqrt(S[t])))

        def twist(x, t):
            return -0.5 * P[t] * x**2 + h[t] * x + c[t]

        pf = ParticleFilter(
            transition, jnp.asarray(M0), num_particles=8, proposal=proposal, twist=twist
        )
        xs = (jnp.asarray(YS), jnp.arange(T))
        log_z = oracles.kalman_filter(YS[:, None], **{**KF, "P0": np.zeros((1, 1))})[0]
        lower = pf.run(jax.random.PRNGKey(0), xs)
        ref = {"x": jnp.asarray(YS)}  # any path: every weight is 1
        upper = pf.run(jax.random.PRNGKey(1), xs, reference=ref)
        np.testing.assert_allclose(lower.log_Z, log_z, atol=1e-6)
        np.testing.assert_allclose(upper.log_Z, log_z, atol=1e-6)
        np.testing.assert_allclose(lower.log_Z_increments[1:], 0.0, atol=1e-6)


def test_transition_shared_with_numpyro_scan():
    """The transition is the one written for numpyro.contrib.control_flow.scan: simulate
    (latents, data) from the scan model, then bracket each data set's Kalman log Z with the
    filter (lower) and conditional SMC clamped to the simulated path (upper; the simulated
    latents are an exact posterior draw given their data)."""
    from numpyro.contrib.control_flow import scan

    def model(T, ys=None):
        scan(lg_transition, lg_init(), ys, length=T)

    runs = 40
    pf = ParticleFilter(lg_transition, lg_init, num_particles=64)

    def one(k):
        k1, k2, k3 = jax.random.split(k, 3)
        tr = handlers.trace(handlers.seed(model, k1)).get_trace(T)
        ys, xs, x0 = tr["y"]["value"], tr["x"]["value"], tr["x0"]["value"]
        lo = pf.run(k2, ys).log_Z
        up = pf.run(k3, ys, reference={"x": xs}, reference_init={"x0": x0}).log_Z
        return ys, lo, up

    ys, lower, upper = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(7), runs))
    assert ys.shape == (runs, T)
    truth = [oracles.kalman_filter(y[:, None], **KF)[0] for y in np.asarray(ys, np.float64)]
    L = np.asarray(lower, np.float64) - truth
    U = np.asarray(upper, np.float64) - truth
    slack = np.log(2 * runs / ALPHA)
    assert abs(oracles.lme_z(L, 0.0)) < 4  # z-score: log-mean-exp(L - log Z) vs 0
    assert abs(oracles.lme_z(-U, 0.0)) < 4  # z-score: -log-mean-exp(log Z - U) vs 0
    assert L.max() <= slack and U.min() >= -slack  # distribution-free
    assert (U - L).mean() / ((U - L).std(ddof=1) / np.sqrt(runs)) > -3  # z-score: E[U] >= E[L]


# --------------------------------------------------------------------------- discrete HMM
PI0 = np.array([0.6, 0.3, 0.1])
TRANS = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]])
LOCS = np.array([-1.0, 0.5, 2.0])
SCALE = 0.8
T_HMM = 15


def hmm_transition(z, y):
    z = numpyro.sample("z", dist.Categorical(probs=jnp.asarray(TRANS)[z]))
    numpyro.sample("y", dist.Normal(jnp.asarray(LOCS)[z], SCALE), obs=y)
    return z, z


def hmm_init():
    return numpyro.sample("z0", dist.Categorical(probs=jnp.asarray(PI0)))


def test_hmm_log_Z_bracketed_by_forward_algorithm():
    rng = np.random.default_rng(2)
    z, ys = rng.choice(3, p=PI0), []
    for _ in range(T_HMM):
        z = rng.choice(3, p=TRANS[z])
        ys.append(LOCS[z] + SCALE * rng.normal())
    ys = np.asarray(ys)
    log_lik = -0.5 * ((ys[:, None] - LOCS) / SCALE) ** 2 - np.log(SCALE * np.sqrt(2 * np.pi))
    log_z, _ = oracles.hmm_forward(np.log(PI0), np.log(TRANS), log_lik)
    paths = oracles.hmm_ffbs(rng, np.log(PI0), np.log(TRANS), log_lik, R)
    pf = ParticleFilter(hmm_transition, hmm_init, num_particles=16, resampling="stratified")
    lower = pf.run(jax.random.split(jax.random.PRNGKey(3), R), jnp.asarray(ys))
    upper = pf.run(
        jax.random.split(jax.random.PRNGKey(4), R),
        jnp.asarray(ys),
        reference={"z": jnp.asarray(paths[:, 1:], jnp.int32)},
        reference_init={"z0": jnp.asarray(paths[:, 0], jnp.int32)},
    )
    L, U = np.asarray(lower.log_Z, np.float64), np.asarray(upper.log_Z, np.float64)
    assert abs(oracles.lme_z(L, log_z)) < 4  # z-score
    assert abs(oracles.lme_z(-U, -log_z)) < 4  # z-score
    assert L.max() <= log_z + SLACK and U.min() >= log_z - SLACK
    assert L.mean() <= log_z <= U.mean()


# --------------------------------------------------------------------------- errors
def test_errors():
    pf = ParticleFilter(lg_transition, lg_init, num_particles=4)

    def unobserved(x, y):
        return numpyro.sample("x", dist.Normal(x, 1.0)), None

    with pytest.raises(ValueError, match="no observed sample site"):
        ParticleFilter(unobserved, 0.0, num_particles=4).run(jax.random.PRNGKey(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="leading time axis"):
        pf.run(jax.random.PRNGKey(0), jnp.asarray(1.0))
    with pytest.raises(ValueError, match="lacks"):
        pf.run(jax.random.PRNGKey(0), jnp.zeros(3), reference={"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="leading time axis 3"):
        pf.run(
            jax.random.PRNGKey(0),
            jnp.zeros(3),
            reference={"x": jnp.zeros(2)},
            reference_init={"x0": 0.0},
        )
    with pytest.raises(ValueError, match="reference_init"):
        pf.run(jax.random.PRNGKey(0), jnp.zeros(3), reference={"x": jnp.zeros(3)})
    with pytest.raises(ValueError, match="resampling scheme"):
        ParticleFilter(lg_transition, lg_init, resampling="optimal")
    with pytest.raises(ValueError, match="num_particles"):
        ParticleFilter(lg_transition, lg_init, num_particles=1)
    with pytest.raises(ValueError, match=r"non-finite values at time steps \[2\]"):
        pf.run(jax.random.PRNGKey(0), jnp.array([0.0, 1.0, jnp.nan]))

    def positive_obs(x, y):
        x = numpyro.sample("x", dist.Normal(x, 1.0))
        numpyro.sample("y", dist.Exponential(1.0), obs=y)
        return x, x

    with pytest.raises(ValueError, match="-inf for all 16 particles"):
        ParticleFilter(positive_obs, 0.0, num_particles=4).run(jax.random.PRNGKey(0), -jnp.ones(3))

    def nan_factor(x, y):
        x = numpyro.sample("x", dist.Normal(x, 1.0))
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)
        numpyro.factor("penalty", jnp.log(x - 1e6))  # NaN: log of a negative number
        return x, x

    with pytest.raises(ValueError, match="NaN"):
        ParticleFilter(nan_factor, 0.0, num_particles=4).run(jax.random.PRNGKey(0), jnp.ones(3))


def test_sharded_equals_unsharded():
    """Particles split over the 4 forced host devices: same seed, same result."""
    assert jax.device_count() >= 2, "tests/conftest.py forces 4 host devices"
    n = 16 * jax.device_count()
    key = jax.random.PRNGKey(5)
    plain = ParticleFilter(lg_transition, lg_init, num_particles=n).run(key, jnp.asarray(YS))
    sharded = ParticleFilter(lg_transition, lg_init, num_particles=n, shard=True).run(
        key, jnp.asarray(YS)
    )
    np.testing.assert_allclose(sharded.log_Z, plain.log_Z, rtol=1e-5)
    np.testing.assert_array_equal(sharded.ancestors, plain.ancestors)
    np.testing.assert_allclose(sharded.carry, plain.carry, rtol=1e-5)
    assert len(sharded.carry.sharding.device_set) == jax.device_count()
