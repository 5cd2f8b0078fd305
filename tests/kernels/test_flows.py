"""kernels.flows: discrete deterministic Gibbs against exact enumeration on a small Ising model."""

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


def test_errors():
    with pytest.raises(ValueError, match="supports"):
        fl.discrete_deterministic_gibbs(lambda x: 0.0, [])
    init, _ = fl.discrete_deterministic_gibbs(fl.ising_log_joint(SHAPE, BETA), [2] * D)
    with pytest.raises(ValueError, match="position must have shape"):
        init(jax.random.key(0), jnp.zeros(3, jnp.int32))
