"""Robustness of kernels.involutive: offsets, NaN/-inf regions, boundary errors, pytrees."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size
from scipy.stats import norm

import kernels.involutive as inv

CHAINS, STEPS = 8, 2000


@functools.cache
def _sample(name, target):
    logp = TARGETS[target]
    algo = {
        "hmc": lambda: inv.hmc(logp, 0.3, jnp.ones(2), 5),
        "rwm": lambda: inv.rwm(logp, 1.0),
        "mala": lambda: inv.mala(logp, 0.1),
    }[name]()

    @jax.jit
    def run(key):
        def chain(key):
            def body(state, key):
                state, info = algo.step(key, state)
                return state, (state.position, state.logdensity, info.is_accepted)

            return jax.lax.scan(body, algo.init(jnp.zeros(2)), jax.random.split(key, STEPS))[1]

        return jax.vmap(chain)(jax.random.split(key, CHAINS))

    return tuple(np.asarray(a) for a in run(jax.random.key(0)))


def _std_normal(x):
    return -0.5 * jnp.sum(x**2)


TARGETS = {
    "offset": lambda x: _std_normal(x) - 1e4,
    "nan_region": lambda x: jnp.where(x[0] > 1.0, jnp.nan, _std_normal(x)),
    "neginf_region": lambda x: jnp.where(x[0] > 1.0, -jnp.inf, _std_normal(x)),
}


def _z(samples, truth):
    ess = float(effective_sample_size(samples[..., None])[0])
    return (samples.mean() - truth) / (samples.std() / np.sqrt(ess))


@pytest.mark.parametrize("name", ["hmc", "rwm", "mala"])
def test_offset_log_density_float32(name):
    xs, logd, acc = _sample(name, "offset")
    assert xs.dtype == np.float32 and np.all(np.isfinite(xs))
    assert acc.mean() > 0.3
    for i in range(2):
        assert abs(_z(xs[..., i], 0.0)) < 4  # z-score
        assert abs(_z(xs[..., i] ** 2, 1.0)) < 4  # z-score


@pytest.mark.parametrize("target", ["nan_region", "neginf_region"])
@pytest.mark.parametrize("name", ["hmc", "rwm", "mala"])
def test_non_finite_region_is_never_entered(name, target):
    xs, logd, _ = _sample(name, target)
    assert np.all(np.isfinite(xs)) and np.all(np.isfinite(logd))
    assert np.all(xs[..., 0] <= 1.0)
    # x0 is a standard normal truncated to (-inf, 1]: E x0 = -phi(1) / Phi(1)
    assert abs(_z(xs[..., 0], -norm.pdf(1.0) / norm.cdf(1.0))) < 4  # z-score
    assert abs(_z(xs[..., 1] ** 2, 1.0)) < 4  # z-score


def test_nan_log_det_is_rejected():
    algo = inv.imcmc(
        _std_normal,
        lambda key, x: jax.random.normal(key, x.shape),
        lambda v, x: -0.5 * jnp.sum(v**2),
        lambda x, v: (x + v, -v, jnp.nan),
    )
    state = algo.init(jnp.zeros(2))
    for key in jax.random.split(jax.random.key(1), 5):
        new, info = algo.step(key, state)
        assert not info.is_accepted and info.acceptance_rate == 0.0
        np.testing.assert_array_equal(new.position, state.position)


# ------------------------------------------------------------------ errors at the boundary
def test_non_finite_initial_log_density_raises():
    logp = TARGETS["nan_region"]
    with pytest.raises(ValueError, match="not finite"):
        inv.hmc(logp, 0.1, jnp.ones(2), 3).init(jnp.array([2.0, 0.0]))
    with pytest.raises(ValueError, match="not finite"):
        inv.rwm.init(jnp.array([2.0, 0.0]), TARGETS["neginf_region"])
    # under a transformation the value is not concrete: no Python-level error (SMC init)
    jax.jit(lambda x: inv.hmc.init(x, logp))(jnp.array([2.0, 0.0]))


def test_bad_shapes_at_init():
    with pytest.raises(ValueError, match="inverse_mass_matrix has shape"):
        inv.hmc(_std_normal, 0.1, jnp.ones(3), 3).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="inverse_mass_matrix has shape"):
        inv.mala(_std_normal, 0.1, jnp.eye(3)).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="must return a scalar"):
        inv.rwm(lambda x: -0.5 * x**2, 1.0).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="floating-point"):
        inv.hmc(_std_normal, 0.1, jnp.ones(2), 3).init(jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="alpha must be in"):
        inv.irreversible_mala(_std_normal, 0.1, alpha=1.0).step(
            jax.random.key(0), inv.irreversible_mala.init(jnp.zeros(2), _std_normal)
        )


def test_check_involution():
    x, v = jnp.array([0.3, -1.0]), jnp.array([0.5, 2.0])
    inv.check_involution(lambda x, v: (x + v, -v, 0.0), x, v)
    inv.check_involution(lambda x, v: (v, x), x, v)
    with pytest.raises(ValueError, match="not an involution"):
        inv.check_involution(lambda x, v: (x + v, v), x, v)
    with pytest.raises(ValueError, match="leaf shapes"):
        inv.check_involution(lambda x, v: (x, v[:1]), x, v)
    with pytest.raises(ValueError, match="structure"):
        inv.check_involution(lambda x, v: ((x, x), v), x, v)
    with pytest.raises(ValueError, match="not square"):
        inv.log_abs_det_jacobian(lambda x, v: (x, jnp.concatenate([v, v])), x, v)
    with pytest.raises(ValueError, match="must return a tuple"):
        inv.check_involution(lambda x, v: x, x, v)


def test_automatic_log_det_on_pytrees():
    # f(x, v) = (1 / x, v) on x in (0, inf): log|det J| = -2 sum log x
    x = {"a": jnp.array([2.0, 0.5]), "b": jnp.array(4.0)}
    v = jnp.zeros(3)

    def f(x, v):
        return jax.tree.map(lambda a: 1.0 / a, x), v

    inv.check_involution(f, x, v)
    expected = -2 * (np.log(2.0) + np.log(0.5) + np.log(4.0))
    np.testing.assert_allclose(inv.log_abs_det_jacobian(f, x, v), expected, rtol=1e-6)


def test_pytree_positions_and_info_fields():
    def logp(p):
        return -0.5 * jnp.sum(p["a"] ** 2) - 0.5 * p["b"] ** 2

    pos = {"a": jnp.zeros(3), "b": jnp.array(0.0)}
    for algo in (
        inv.hmc(logp, 0.3, jnp.ones(4), 4),
        inv.hmc(logp, 0.3, jnp.eye(4), 4),
        inv.mala(logp, 0.1),
        inv.rwm(logp, 0.5),
        inv.irreversible_mala(logp, 0.1),
    ):
        state, info = jax.jit(algo.step)(jax.random.key(0), algo.init(pos))
        assert jax.tree.structure(state.position) == jax.tree.structure(pos)
        assert state.position["a"].shape == (3,)
        assert set(info._fields) >= {"acceptance_rate", "is_accepted", "is_divergent"}
    assert int(info.num_grad_evals) == 1
    _, info = inv.hmc(logp, 0.3, jnp.ones(4), 4).step(jax.random.key(0), inv.hmc.init(pos, logp))
    assert int(info.num_grad_evals) == 4
