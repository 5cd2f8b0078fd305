"""kernels.flows.discrete_gibbs: discrete deterministic Gibbs against exact enumeration.

Exactness: the discrete divergence-free condition (flux balance p(x) v_i(x) = p(x + e_i)
v_i(x + e_i) across every cell border of a 2x3 Ising model, 1e-10) and the evaluation count.
Statistics (z-scores over independent chains): time-weighted estimates against enumeration, the
state occupied at a fixed time from a stationary start, the resampled view, and a NumPyro-free
three-valued model.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels.flows as fl

SHAPE, BETA, FIELD = (2, 3), 0.4, 0.15
D = SHAPE[0] * SHAPE[1]
CHAINS, EVENTS = 64, 3000


def _exact():
    lj = fl.ising_log_joint(SHAPE, BETA, FIELD)
    xs = np.array(list(itertools.product([0, 1], repeat=D)))
    logp = np.array([float(lj(jnp.asarray(x))) for x in xs])
    p = np.exp(logp - logp.max())
    p /= p.sum()
    m = (2 * xs - 1).mean(1)
    return p @ m, p @ m**2


@functools.cache
def _runs():
    init, step = fl.discrete_deterministic_gibbs(fl.ising_log_joint(SHAPE, BETA, FIELD), [2] * D)

    def one(key):
        k0, k1 = jax.random.split(key)
        x0 = jax.random.bernoulli(k0, 0.5, (D,)).astype(jnp.int32)
        _, info = jax.lax.scan(lambda s, _: step(s), init(k1, x0), None, length=EVENTS)
        return info

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), CHAINS))


def test_ising_weighted_estimates_match_enumeration():
    info = _runs()
    m = (2 * info.position - 1).mean(-1)  # (chains, events)
    est1 = np.asarray(fl.weighted_mean(m, info.weight, axis=1))
    est2 = np.asarray(fl.weighted_mean(m**2, info.weight, axis=1))
    e1, e2 = _exact()
    for est, exact in [(est1, e1), (est2, e2)]:
        z = (est.mean() - exact) / (est.std(ddof=1) / np.sqrt(CHAINS))
        assert abs(z) < 4, (est.mean(), exact, z)  # z-score
    assert np.all(np.asarray(info.weight) > 0)


def test_resampled_view_agrees_with_weighted():
    info = _runs()
    m = (2 * info.position - 1).mean(-1)
    weighted = np.asarray(fl.weighted_mean(m**2, info.weight, axis=1))
    keys = jax.random.split(jax.random.key(1), CHAINS)
    res = jax.vmap(lambda k, p, w: fl.resample(k, p, w, EVENTS))(keys, info.position, info.weight)
    resampled = np.asarray(((2 * res - 1).mean(-1) ** 2).mean(1))
    diff = resampled - weighted
    z = diff.mean() / (diff.std(ddof=1) / np.sqrt(CHAINS))
    assert abs(z) < 4, z  # z-score


def _enumerate(lj, supports):
    xs = np.array(list(itertools.product(*[range(k) for k in supports])))
    logp = np.asarray(jax.vmap(lj)(jnp.asarray(xs)))
    p = np.exp(logp - logp.max())
    return xs, p / p.sum()


def test_flux_balance_is_exact():
    """div(p v) = 0 on the lattice: p(x) v_i(x) = c_i p(x_-i) is the same for every value of x_i,
    so the flux out of x through the upper border of i enters x + e_i (float64, 1e-10)."""
    with jax.enable_x64(True):
        lj = fl.ising_log_joint(SHAPE, BETA, FIELD)
        supports = (2,) * D
        xs, p = _enumerate(lj, supports)
        logc = np.asarray(
            jax.vmap(lambda x: fl.current_log_conditionals(lj, x, supports))(jnp.asarray(xs))
        )
        log_flux = np.log(p)[:, None] - logc  # log p(x) v_i(x) / c_i
        index = {tuple(x): n for n, x in enumerate(xs)}
        for n, x in enumerate(xs):
            for i in range(D):
                y = x.copy()
                y[i] = (y[i] + 1) % 2
                assert abs(log_flux[n, i] - log_flux[index[tuple(y)], i]) < 1e-10


def test_three_valued_coordinates_and_evaluation_count():
    """Coordinates with 3 and 2 values and an interaction; 1 + sum(K_i - 1) evaluations."""
    table = np.random.default_rng(5).normal(size=(3, 2, 3))

    def lj(x):
        return jnp.asarray(table)[x[0], x[1], x[2]]

    supports = (3, 2, 3)
    xs, p = _enumerate(lj, supports)
    init, step = fl.discrete_deterministic_gibbs(lj, supports)

    def one(key):
        _, info = jax.lax.scan(lambda s, _: step(s), init(key, jnp.array([0, 1, 2])), None, 4000)
        return info

    info = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(6), 64))
    assert int(info.num_density_evals[0, 0]) == 2 + 1 + 2
    pos = np.asarray(info.position)
    for v in range(3):
        est = np.asarray(fl.weighted_mean((pos[..., 0] == v).astype(float), info.weight, axis=1))
        exact = p[xs[:, 0] == v].sum()
        z = (est.mean() - exact) / (est.std(ddof=1) / np.sqrt(len(est)))
        assert abs(z) < 4, (v, est.mean(), exact, z)  # z-score


def test_state_at_a_fixed_time_is_stationary():
    """(x, u) ~ p(x) du at time 0 (x drawn by enumeration, u uniform): the state occupied at
    time t = 5 has law p; z-scores of the magnetization and of its square over 512 chains."""
    lj = fl.ising_log_joint(SHAPE, BETA, FIELD)
    xs, p = _enumerate(lj, (2,) * D)
    init, step = fl.discrete_deterministic_gibbs(lj, [2] * D)
    starts = jnp.asarray(xs[np.random.default_rng(7).choice(len(p), size=512, p=p)])
    t_end = 5.0

    def one(key, x0):
        def body(carry, _):
            state, clock, occupied = carry
            new, info = step(state)
            # the state occupied over [clock, clock + tau) is info.position
            hit = (clock <= t_end) & (clock + info.weight > t_end)
            return (new, clock + info.weight, jnp.where(hit, info.position, occupied)), None

        carry = (init(key, x0), jnp.zeros(()), x0)
        (_, clock, occupied), _ = jax.lax.scan(body, carry, None, length=400)
        return occupied, clock

    occ, clock = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(8), 512), starts)
    assert float(np.min(clock)) > t_end  # every chain went past t_end
    m = (2 * np.asarray(occ) - 1).mean(-1)
    mag = (2 * xs - 1).mean(1)
    for f, exact in [(m, p @ mag), (m**2, p @ mag**2)]:
        z = (f.mean() - exact) / (f.std(ddof=1) / np.sqrt(len(f)))
        assert abs(z) < 4, (f.mean(), exact, z)  # z-score


def test_errors():
    with pytest.raises(ValueError, match="supports"):
        fl.discrete_deterministic_gibbs(lambda x: 0.0, [])
    with pytest.raises(ValueError, match="single value"):
        fl.discrete_deterministic_gibbs(lambda x: 0.0, [1, 1])
    init, _ = fl.discrete_deterministic_gibbs(fl.ising_log_joint(SHAPE, BETA), [2] * D)
    with pytest.raises(ValueError, match="position must have shape"):
        init(jax.random.key(0), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="0 <= x_i < K_i"):
        init(jax.random.key(0), jnp.full(D, 2, jnp.int32))
    with pytest.raises(ValueError, match="speed must be positive"):
        init(jax.random.key(0), jnp.zeros(D, jnp.int32), speed=0.0)
    with pytest.raises(ValueError, match="finite and non-negative"):
        fl.weighted_mean(jnp.ones(3), jnp.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="must match the leading axes"):
        fl.weighted_mean(jnp.ones(3), jnp.ones(4))
