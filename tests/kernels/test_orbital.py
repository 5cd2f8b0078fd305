"""kernels.orbital: exact invariance, moments, log-space robustness, unbiased multinomial HMC."""

import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.mcmc import integrators, metrics
from blackjax.smc import extend_params, resampling

import kernels.orbital as orb

# --------------------------------------------------------------------------- exact, finite set
N_STATES = 7
PERM = np.array([1, 2, 3, 0, 5, 6, 4])  # cycles of length 4 and 3
LOGPI = np.log(np.array([0.05, 0.3, 0.1, 0.15, 0.2, 0.12, 0.08]))


def _finite_kernel(period, shift):
    perm = jnp.asarray(PERM, jnp.int32)
    inv = jnp.asarray(np.argsort(PERM), jnp.int32)
    logpi = jnp.asarray(LOGPI)
    return orb.periodic_orbital(
        lambda z: logpi[z],
        lambda z: (perm[z], jnp.zeros(())),
        lambda z: (inv[z], jnp.zeros(())),
        period,
        index_shift=shift,
    )


@pytest.mark.parametrize("period,shift", [(5, 2), (3, 1), (6, 0)])
def test_periodic_orbital_exact_invariance(period, shift):
    """pi P = pi on the extended space (z, k), from the weights that step itself computes."""
    with jax.enable_x64(True):
        alg = _finite_kernel(period, shift)
        step = jax.jit(alg.step)
        n = N_STATES * period
        P = np.zeros((n, n))
        for z in range(N_STATES):
            for k in range(period):
                state = orb.PeriodicState(jnp.asarray(z, jnp.int32), jnp.asarray(k, jnp.int32))
                _, info = step(jax.random.key(0), state)
                pts, w = np.asarray(info.orbit), np.asarray(info.weights)
                assert pts[k] == z
                for j in range(period):
                    P[z * period + k, pts[j] * period + (j - shift) % period] += w[j]
        pi = np.repeat(np.exp(LOGPI), period) / period
        np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(pi @ P, pi, atol=1e-10)


def test_periodic_orbital_samples_match_weights():
    """The sampled index follows info.weights (chi-square style z-score per cell)."""
    alg = _finite_kernel(5, 2)
    state = orb.PeriodicState(jnp.asarray(1, jnp.int32), jnp.asarray(2, jnp.int32))
    keys = jax.random.split(jax.random.key(1), 20000)
    _, info = jax.vmap(alg.step, in_axes=(0, None))(keys, state)
    freq = np.bincount(np.asarray(info.chosen), minlength=5) / len(keys)
    w = np.asarray(info.weights[0])
    se = np.sqrt(w * (1 - w) / len(keys))
    assert np.all(np.abs(freq - w) < 4 * se + 1e-12)  # z-score < 4 per cell


# --------------------------------------------------------------------------- continuous targets
DIM = 4
RNG = np.random.default_rng(0)
A = RNG.normal(size=(DIM, DIM))
COV = A @ A.T / DIM + np.diag(np.linspace(0.5, 2.0, DIM))
MEAN = np.linspace(-1.0, 1.0, DIM)
PREC = np.linalg.inv(COV)


def gauss_logdensity(x):
    d = x - MEAN
    return -0.5 * d @ PREC @ d


CHAINS, STEPS, BURN = 256, 300, 50


def _run_chains(alg, key, init, steps=STEPS):
    def one(key, x0):
        state = alg.init(x0)

        def body(s, k):
            s, info = alg.step(k, s)
            return s, (s.position, info.acceptance_rate)

        _, (xs, acc) = jax.lax.scan(body, state, jax.random.split(key, steps))
        return xs, acc

    keys = jax.random.split(key, init.shape[0])
    return jax.jit(jax.vmap(one))(keys, init)


def _check_moments(xs, mean, var, burn=BURN):
    """Per-chain averages are independent: z-scores across chains."""
    xs = np.asarray(xs)[:, burn:]
    m = xs.mean(1)  # (chains, dim)
    z = (m.mean(0) - mean) / (m.std(0, ddof=1) / np.sqrt(m.shape[0]))
    assert np.all(np.abs(z) < 4), z  # z-score
    v = ((xs - mean) ** 2).mean(1)
    z = (v.mean(0) - var) / (v.std(0, ddof=1) / np.sqrt(v.shape[0]))
    assert np.all(np.abs(z) < 4), z  # z-score


@functools.cache
def _gauss_runs():
    init = jnp.asarray(MEAN + RNG.normal(size=(CHAINS, DIM)))
    imm = jnp.ones(DIM)
    out = {}
    out["orbital"] = _run_chains(
        orb.orbital_hmc(gauss_logdensity, 0.35, imm, 6, momentum_persistence=0.5),
        jax.random.key(2),
        init,
    )
    out["multinomial"] = _run_chains(
        orb.multinomial_hmc(gauss_logdensity, 0.35, imm, 5), jax.random.key(3), init
    )
    out["contracting"] = _run_chains(
        orb.contracting_orbital_hmc(gauss_logdensity, 0.3, imm, friction=0.3, max_steps=12),
        jax.random.key(4),
        init,
    )
    return out


@pytest.mark.parametrize("name", ["orbital", "multinomial", "contracting"])
def test_gaussian_moments(name):
    xs, acc = _gauss_runs()[name]
    assert np.all(np.isfinite(np.asarray(xs)))
    assert 0.3 < float(np.mean(acc)) <= 1.0
    _check_moments(xs, MEAN, np.diag(COV))


def banana_logdensity(x):
    b = 0.5
    return -0.5 * x[0] ** 2 - 0.5 * (x[1] - b * x[0] ** 2) ** 2


def test_banana_moments_and_rao_blackwell():
    """E[x0] = 0, E[x0^2] = 1, E[x1] = b, E[x1^2] = 1 + 3 b^2; RB estimate agrees."""
    b = 0.5
    alg = orb.orbital_hmc(banana_logdensity, 0.3, jnp.ones(2), 8)
    init = jnp.asarray(RNG.normal(size=(CHAINS, 2)))

    def one(key, x0):
        def body(s, k):
            s, info = alg.step(k, s)
            rb = orb.rao_blackwell(lambda q: q[1], info)
            return s, (s.position, rb)

        _, out = jax.lax.scan(body, alg.init(x0), jax.random.split(key, STEPS))
        return out

    xs, rb = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), CHAINS), init)
    mean = np.array([0.0, b])
    var = np.array([1.0, 1.0 + 2 * b**2])  # Var x1 = 1 + b^2 Var(x0^2) = 1 + 2 b^2
    _check_moments(xs, mean, var)
    m = np.asarray(rb)[:, BURN:].mean(1)
    z = (m.mean() - b) / (m.std(ddof=1) / np.sqrt(CHAINS))
    assert abs(z) < 4, z  # z-score


# --------------------------------------------------------------------------- log-space robustness
def test_offset_minus_1e4_float32_vs_blackjax():
    offset = -1e4

    def logdensity(x):
        return -0.5 * jnp.sum(x**2) + offset

    x0 = jnp.ones(3, jnp.float32)
    theirs = blackjax.orbital_hmc(logdensity, 0.2, jnp.ones(3), 6)
    s, info = jax.jit(theirs.step)(jax.random.key(0), theirs.init(x0))
    assert not np.all(np.isfinite(np.asarray(s.weights)))  # BlackJAX: exp(-1e4) / 0 -> NaN

    ours = orb.orbital_hmc(logdensity, 0.2, jnp.ones(3), 6)
    xs, acc = _run_chains(ours, jax.random.key(1), jnp.tile(x0, (64, 1)), steps=200)
    assert xs.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(xs)))
    assert float(np.mean(acc)) > 0.5
    v = (np.asarray(xs)[:, 50:] ** 2).mean(1)  # variance of a standard normal
    z = (v.mean() - 1.0) / (v.std(ddof=1) / np.sqrt(v.shape[0]))
    assert abs(z) < 4, z  # z-score


# --------------------------------------------------------------------------- random offset matters
def _forward_only(logdensity_fn, step_size, num_steps):
    """Multinomial sampling from the forward trajectory {T^j z}_{j=0}^{L} (current point first)."""
    metric = metrics.default_metric(jnp.ones(1))
    integ = integrators.velocity_verlet(logdensity_fn, metric.kinetic_energy)

    def signed_step(z, d):
        return integ(z, d * step_size), jnp.zeros(())

    def logweight(z):
        return z.logdensity - metric.kinetic_energy(z.momentum)

    def step(key, state):
        k1, k2 = jax.random.split(key)
        p = metric.sample_momentum(k1, state.position)
        z0 = integrators.IntegratorState(state.position, p, state.logdensity, state.logdensity_grad)
        z, *_ = orb.orbital_step(k2, z0, 0, signed_step, logweight, num_steps + 1)
        return state._replace(
            position=z.position, logdensity=z.logdensity, logdensity_grad=z.logdensity_grad
        ), orb.OrbitalInfo(*([jnp.zeros(())] * 8))

    return blackjax.base.SamplingAlgorithm(lambda x: orb.init(x, logdensity_fn), step)


def test_multinomial_random_offset_unbiased_forward_only_biased():
    """1-d N(0, 1), large step (energy error): variance is 1 with the random offset only."""

    def logdensity(x):
        return -0.5 * jnp.sum(x**2)

    eps, L = 1.3, 3
    init = jnp.asarray(RNG.normal(size=(1024, 1)))
    ours, _ = _run_chains(
        orb.multinomial_hmc(logdensity, eps, jnp.ones(1), L), jax.random.key(6), init, 400
    )
    fwd, _ = _run_chains(_forward_only(logdensity, eps, L), jax.random.key(6), init, 400)

    def z_of(xs):
        v = (np.asarray(xs)[:, 100:, 0] ** 2).mean(1)
        return (v.mean() - 1.0) / (v.std(ddof=1) / np.sqrt(len(v)))

    assert abs(z_of(ours)) < 4  # z-score
    assert abs(z_of(fwd)) > 6  # forward-only: bias far beyond Monte Carlo error


# --------------------------------------------------------------------------- SMC and errors
def test_tempered_smc_inner_kernel():
    """Conjugate Gaussian: posterior mean of the particles, z-score over runs."""
    dim, n_obs, runs, particles = 2, 5, 8, 300
    y = np.random.default_rng(0).normal(1.0, 1.0, size=(n_obs, dim))

    def logprior(x):
        return -0.5 * jnp.sum(x**2)

    def loglik(x):
        return jnp.sum(-0.5 * (y - x) ** 2)

    smc = blackjax.tempered_smc(
        logprior,
        loglik,
        orb.build_kernel(index_shift=2, period=5),
        orb.init,
        extend_params({"step_size": 0.3, "inverse_mass_matrix": jnp.ones(dim)}),
        resampling.systematic,
        num_mcmc_steps=4,
    )
    schedule = jnp.linspace(0.0, 1.0, 9)[1:] ** 2

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        state = smc.init(jax.random.normal(k0, (particles, dim)))

        def body(state, inp):
            state, _ = smc.step(inp[0], state, inp[1])
            return state, None

        state, _ = jax.lax.scan(body, state, (jax.random.split(k1, len(schedule)), schedule))
        return jnp.sum(state.weights[:, None] * state.particles, 0)

    mean = np.asarray(jax.vmap(run)(jax.random.split(jax.random.key(7), runs)))
    post = y.sum(0) / (n_obs + 1)
    z = (mean.mean(0) - post) / (mean.std(0, ddof=1) / np.sqrt(runs))
    assert np.all(np.abs(z) < 4), z  # z-score


def test_errors():
    with pytest.raises(ValueError, match="period must be a positive integer"):
        orb.orbital_hmc(gauss_logdensity, 0.1, jnp.ones(DIM), 0)
    with pytest.raises(ValueError, match="step_size must be positive"):
        orb.orbital_hmc(gauss_logdensity, -0.1, jnp.ones(DIM), 4)
    with pytest.raises(ValueError, match="momentum_persistence"):
        orb.build_kernel(momentum_persistence=1.0)
    alg = orb.orbital_hmc(lambda x: jnp.log(-jnp.sum(x)), 0.1, jnp.ones(2), 4)
    with pytest.raises(ValueError, match="not finite at the initial position"):
        alg.init(jnp.ones(2))


def test_info_fields():
    alg = orb.orbital_hmc(gauss_logdensity, 0.3, jnp.ones(DIM), 5)
    s, info = jax.jit(alg.step)(jax.random.key(0), alg.init(jnp.zeros(DIM)))
    assert info.orbit.position.shape == (5, DIM)
    np.testing.assert_allclose(float(info.weights.sum()), 1.0, rtol=1e-5)
    assert int(info.num_grad_evals) == 4
    assert s.position.shape == (DIM,)
