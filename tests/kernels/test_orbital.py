"""kernels.orbital: exact invariance, moments, log-space robustness, unbiased multinomial HMC."""

import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.smc import extend_params, resampling

import kernels.orbital as orb

# --------------------------------------------------------------------------- exact, finite set
N_STATES = 7
PERM = np.array([1, 2, 3, 0, 5, 6, 4])  # cycles of length 4 and 3
LOGPI = np.log(np.array([0.05, 0.3, 0.1, 0.15, 0.2, 0.12, 0.08]))


def _finite_kernel(period, shift, rotation=None):
    perm = jnp.asarray(PERM, jnp.int32)
    inv = jnp.asarray(np.argsort(PERM), jnp.int32)
    logpi = jnp.asarray(LOGPI)
    alg = orb.periodic_orbital(
        lambda z: logpi[z],
        lambda z: (perm[z], jnp.zeros(())),
        lambda z: (inv[z], jnp.zeros(())),
        period,
        index_shift=shift,
        rotation=rotation,
    )
    return alg


def _transition_matrix(period, shift, rotation):
    """Exact transition matrix on (z, k) assembled from step's own info.orbit / info.transition."""
    step = jax.jit(_finite_kernel(period, 0 if shift is None else shift, rotation).step)
    n = N_STATES * period
    P = np.zeros((n, n))
    for z in range(N_STATES):
        for k in range(period):
            state = orb.PeriodicState(jnp.asarray(z, jnp.int32), jnp.asarray(k, jnp.int32))
            _, info = step(jax.random.key(0), state)
            pts, q = np.asarray(info.orbit), np.asarray(info.transition)
            assert pts[k] == z
            np.testing.assert_allclose(q.sum(), 1.0, atol=1e-12)
            for j in range(period):
                P[z * period + k, pts[j] * period + (j - (shift or 0)) % period] += q[j]
    return P


@pytest.mark.parametrize("rotation", [None, 0.5, 0.3])
@pytest.mark.parametrize("period,shift", [(5, 2), (3, 1), (6, 0), (4, None)])
def test_periodic_orbital_exact_invariance(period, shift, rotation):
    """pi P = pi on the extended space (z, k); for the random offset (shift None) the slot is
    redrawn uniformly, so the chain on z is the average over k of the fixed-slot kernels."""
    with jax.enable_x64(True):
        P = _transition_matrix(period, shift, rotation)
        pi = np.repeat(np.exp(LOGPI), period) / period
        if shift is None:
            P = P.reshape(N_STATES, period, N_STATES, period).sum(3).mean(1)
            pi = np.exp(LOGPI)
        np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(pi @ P, pi, atol=1e-10)


@pytest.mark.parametrize("rotation", [0.5, 0.17])
def test_rotation_preserves_weights_exactly(rotation):
    """sum_k w_k Q_kj = w_j and rows of Q sum to 1, zero weights included (float64)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        for _ in range(20):
            logw = np.log(rng.dirichlet(np.ones(9) * 0.7))
            logw[rng.integers(0, 9, 2)] = -np.inf
            logw = jnp.asarray(logw)
            Q = np.stack(
                [np.asarray(orb.choose(jax.random.key(0), logw, k, rotation)[1]) for k in range(9)]
            )
            w = np.exp(np.asarray(logw))
            w /= w.sum()
            np.testing.assert_allclose(Q.sum(1), 1.0, atol=1e-12)
            np.testing.assert_allclose(w @ Q, w, atol=1e-12)
            # from a positive-weight slot, never to the slots of zero weight
            assert np.all(Q[w > 0][:, w == 0] == 0)


def test_rotation_half_moves_half_the_orbit():
    """Equal weights, r = 1/2: always P/2 slots away (cyclically)."""
    for k in range(8):
        j, q = orb.choose(jax.random.key(k), jnp.zeros(8), k, 0.5)
        assert int(j) == (k + 4) % 8
        np.testing.assert_allclose(np.asarray(q), np.eye(8)[(k + 4) % 8], atol=1e-6)


@pytest.mark.parametrize("rotation", [None, 0.5])
def test_periodic_orbital_samples_match_transition(rotation):
    """The sampled index follows info.transition (z-score per cell)."""
    alg = _finite_kernel(5, 2, rotation)
    state = orb.PeriodicState(jnp.asarray(1, jnp.int32), jnp.asarray(2, jnp.int32))
    keys = jax.random.split(jax.random.key(1), 20000)
    _, info = jax.vmap(alg.step, in_axes=(0, None))(keys, state)
    freq = np.bincount(np.asarray(info.chosen), minlength=5) / len(keys)
    q = np.asarray(info.transition[0])
    if rotation is None:
        np.testing.assert_allclose(q, np.asarray(info.weights[0]), rtol=1e-6)
    se = np.sqrt(q * (1 - q) / len(keys))
    assert np.all(np.abs(freq - q) < 4 * se + 1e-12)  # z-score < 4 per cell


def test_orbit_window_num_points():
    """A traced window length n < P: slots j < n hold T^(j-k) z, the others weight 0."""
    perm = jnp.asarray(PERM, jnp.int32)
    inv = jnp.asarray(np.argsort(PERM), jnp.int32)

    def signed_step(z, d):
        return jnp.where(d > 0, perm[z], inv[z]), jnp.zeros(())

    @jax.jit
    def window(k, n):
        return orb.orbit_window(jnp.asarray(4, jnp.int32), k, signed_step, 7, n)

    for n in (1, 3, 7):
        for k in range(n):
            pts, lds = window(k, n)
            z = 4
            for _ in range(k):  # T^(-k) z
                z = int(np.argsort(PERM)[z])
            for j in range(n):
                assert int(pts[j]) == z, (n, k, j)
                z = int(PERM[z])
            assert np.all(np.isfinite(np.asarray(lds[:n])))
            assert np.all(np.asarray(lds[n:]) == -np.inf)


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


GAUSS_KERNELS = {
    "orbital": lambda imm: orb.orbital_hmc(gauss_logdensity, 0.35, imm, 6, alpha=0.5),
    "contracting": lambda imm: orb.contracting_orbital_hmc(
        gauss_logdensity, 0.3, imm, friction=1.0, max_steps=40
    ),
    "orbital_rotation": lambda imm: orb.orbital_hmc(
        gauss_logdensity, 0.35, imm, 8, rotation=0.5, alpha=0.5, num_points=6
    ),
    "multinomial": lambda imm: orb.multinomial_hmc(gauss_logdensity, 0.35, imm, 5),
    "multinomial_rotation": lambda imm: orb.multinomial_hmc(
        gauss_logdensity, 0.35, imm, 5, rotation=0.5
    ),
}


@functools.cache
def _gauss_run(name):
    init = jnp.asarray(MEAN + np.random.default_rng(11).normal(size=(CHAINS, DIM)))
    alg = GAUSS_KERNELS[name](jnp.ones(DIM))
    return _run_chains(alg, jax.random.key(list(GAUSS_KERNELS).index(name) + 2), init)


@pytest.mark.parametrize(
    "name",
    [
        "orbital",
        "contracting",
        "orbital_rotation",
        pytest.param("multinomial", marks=pytest.mark.slow),
        pytest.param("multinomial_rotation", marks=pytest.mark.slow),
    ],
)
def test_gaussian_moments(name):
    xs, acc = _gauss_run(name)
    assert np.all(np.isfinite(np.asarray(xs)))
    if name != "contracting":  # contracting orbits have unequal weights by construction
        assert 0.3 < float(np.mean(acc)) <= 1.0
    _check_moments(xs, MEAN, np.diag(COV))


def test_contracting_stops_both_ways_before_max_steps():
    """Friction 1: the weights fall 20 below their maximum both ways well within 40 steps; the
    window's end slots stay unused and the step count varies from orbit to orbit."""
    alg = orb.contracting_orbital_hmc(gauss_logdensity, 0.3, jnp.ones(DIM), 1.0, max_steps=40)
    keys = jax.random.split(jax.random.key(10), 64)
    _, info = jax.jit(jax.vmap(alg.step, in_axes=(0, None)))(keys, alg.init(jnp.asarray(MEAN)))
    logw = np.asarray(info.log_weights)
    assert np.all(logw[:, 0] == -np.inf) and np.all(logw[:, -1] == -np.inf)
    kept = np.isfinite(logw)
    assert np.all(kept.sum(1) >= 5)
    steps = np.asarray(info.num_grad_evals)
    assert np.all(steps < 80) and steps.min() < steps.max()
    np.testing.assert_allclose(np.asarray(info.weights).sum(1), 1.0, rtol=1e-5)


def banana_logdensity(x):
    b = 0.5
    return -0.5 * x[0] ** 2 - 0.5 * (x[1] - b * x[0] ** 2) ** 2


def test_banana_moments_and_rao_blackwell():
    """E[x0] = 0, E[x0^2] = 1, E[x1] = b, E[x1^2] = 1 + 3 b^2; RB estimate agrees."""
    b = 0.5
    alg = orb.orbital_hmc(banana_logdensity, 0.3, jnp.ones(2), 8)
    init = jnp.asarray(np.random.default_rng(12).normal(size=(CHAINS, 2)))

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
@pytest.mark.parametrize("rotation", [None, pytest.param(0.5, marks=pytest.mark.slow)])
def test_multinomial_random_offset_unbiased_blackjax_mhmc_biased(rotation):
    """1-d N(0, 1), large step (energy error), L = 3: the variance is 1 with the random window
    offset; BlackJAX's ``mhmc`` (current point first, forward trajectory) is biased."""

    def logdensity(x):
        return -0.5 * jnp.sum(x**2)

    eps, L = 1.3, 3
    init = jnp.asarray(np.random.default_rng(13).normal(size=(1024, 1)))
    ours, _ = _run_chains(
        orb.multinomial_hmc(logdensity, eps, jnp.ones(1), L, rotation=rotation),
        jax.random.key(6),
        init,
        400,
    )
    theirs, _ = _run_chains(
        blackjax.mhmc(logdensity, eps, jnp.ones(1), num_integration_steps=L),
        jax.random.key(6),
        init,
        400,
    )

    def z_of(xs):
        v = (np.asarray(xs)[:, 100:, 0] ** 2).mean(1)
        return (v.mean() - 1.0) / (v.std(ddof=1) / np.sqrt(len(v)))

    assert abs(z_of(ours)) < 4  # z-score
    assert abs(z_of(theirs)) > 6  # BlackJAX mhmc: bias far beyond the Monte Carlo error


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
    with pytest.raises(ValueError, match="momentum persistence"):
        orb.build_kernel(alpha=1.0)
    with pytest.warns(DeprecationWarning, match="use alpha"), pytest.raises(ValueError):
        orb.build_kernel(momentum_persistence=1.0)  # the former name still reaches the check
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
