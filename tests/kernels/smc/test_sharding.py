"""Particles sharded over the 4 forced CPU host devices (tests/conftest.py): the same key gives
the same result as one device, and the scan body holds at most a few collectives."""

import re

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from kernels.smc import annealing, sequential, sharding, tempering

pytestmark = pytest.mark.skipif(
    jax.local_device_count() < 4, reason="needs 4 (forced) host devices"
)

Y2 = np.array([1.5, -0.5])
PARAMS = dict(step_size=0.3, inverse_mass_matrix=np.ones(2), num_integration_steps=3)
YS = jnp.asarray(np.random.default_rng(0).normal(size=100), jnp.float32)


def _tempered(key, mesh):
    return tempering.run(
        key,
        lambda k: jax.random.normal(k, (2,)),
        lambda x: norm.logpdf(x).sum(),
        lambda x: norm.logpdf(Y2, x, 0.7).sum(),
        annealing.linear(6),
        blackjax.hmc,
        64,
        kernel_params=PARAMS,
        ess_threshold=0.9,
        mesh=mesh,
    )


def _bootstrap(key, n, mesh, reference=None):
    """Bootstrap filter for x_t = 0.9 x_{t-1} + 0.5 e_t, y_t ~ N(x_t, 0.7^2), T = 100."""
    return sequential.run(
        key,
        init_fn=lambda k, n: {"x": jax.random.normal(k, (n,)), "t": jnp.zeros(n, jnp.int32)},
        propose_fn=lambda k, p, t: {
            "x": 0.9 * p["x"] + 0.5 * jax.random.normal(k, p["x"].shape),
            "t": p["t"] + 1,
        },
        log_weight_fn=lambda pp, p, t: norm.logpdf(YS[t - 1], p["x"], 0.7),
        num_steps=YS.shape[0],
        num_particles=n,
        reference=reference,
        mesh=mesh,
    )


def test_tempered_smc_sharded_equals_unsharded():
    mesh = sharding.particle_mesh()
    assert mesh.devices.size == 4
    a = jax.jit(lambda k: _tempered(k, None))(jax.random.key(0))
    b = jax.jit(lambda k: _tempered(k, mesh))(jax.random.key(0))
    assert len(b.particles.sharding.device_set) == 4
    assert np.any(a.resampled) and not np.all(a.resampled)
    np.testing.assert_array_equal(a.ancestors, b.ancestors)
    np.testing.assert_allclose(a.particles, b.particles, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(a.log_Z), float(b.log_Z), rtol=1e-6)
    x = sharding.shard(a.particles, mesh)
    assert len(x.sharding.device_set) == 4


@pytest.mark.parametrize("n", [256, 4096])
def test_particle_filter_sharded_is_bitwise_unsharded(n):
    """100 steps of a bootstrap filter: identical ancestors and log Z (weights replicated, so
    no reduction is reassociated across shards); conditional SMC likewise."""
    mesh = sharding.particle_mesh()
    ref = {"x": jnp.linspace(-1.0, 1.0, YS.shape[0] + 1), "t": jnp.arange(YS.shape[0] + 1)}
    for reference in (None, ref):
        f = jax.jit(lambda k, m, r=reference: _bootstrap(k, n, m, r), static_argnums=1)
        for seed in range(3):
            a, b = f(jax.random.key(seed), None), f(jax.random.key(seed), mesh)
            np.testing.assert_array_equal(a.ancestors, b.ancestors)
            assert float(a.log_Z) == float(b.log_Z)
            np.testing.assert_array_equal(a.particles["x"], b.particles["x"])
        assert len(b.particles["x"].sharding.device_set) == 4


def test_adaptive_tempering_sharded_equals_unsharded():
    mesh = sharding.particle_mesh()

    def run(key, mesh):
        return tempering.adaptive(
            key,
            lambda k: jax.random.normal(k, (2,)),
            lambda x: norm.logpdf(x).sum(),
            lambda x: norm.logpdf(Y2, x, 0.7).sum(),
            blackjax.hmc,
            64,
            kernel_params=PARAMS,
            mesh=mesh,
        )

    a = jax.jit(lambda k: run(k, None))(jax.random.key(1))
    b = jax.jit(lambda k: run(k, mesh))(jax.random.key(1))
    assert int(a.num_steps) == int(b.num_steps) >= 2
    np.testing.assert_allclose(a.betas, b.betas, rtol=1e-6)
    np.testing.assert_allclose(float(a.log_Z), float(b.log_Z), rtol=1e-6)


def test_few_collectives_in_the_compiled_filter():
    """Regression guard for the layout of kernels.smc.sharding: one all-gather of the log
    weights per step and one of each particle leaf inside the resampling branch. Sharding the
    weights too makes XLA partition the cumsum, binary searches and log-sum-exps (12 collectives
    here, 84 in ppl.ParticleFilter before the fix, which ran 10-50x slower on forced devices)."""
    mesh = sharding.particle_mesh()
    f = jax.jit(lambda k: _bootstrap(k, 256, mesh).log_Z)
    hlo = f.lower(jax.random.key(0)).compile().as_text()
    ops = re.findall(
        r"= \S+ (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\(", hlo
    )
    assert ops and len(ops) <= 4, ops  # 2 here; 12 with sharded weights


def test_shard_errors():
    mesh = sharding.particle_mesh()
    with pytest.raises(ValueError, match="divisible"):
        sharding.shard(np.zeros((mesh.devices.size * 2 + 1, 2)), mesh)
    with pytest.raises(ValueError, match="multiple of 4"):
        _bootstrap(jax.random.key(0), 30, mesh)
