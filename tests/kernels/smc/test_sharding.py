import blackjax
import jax
import numpy as np
import pytest
from jax.scipy.stats import norm

from kernels.smc import annealing, sharding, tempering


def _run(key, constrain_fn):
    return tempering.run(
        key,
        lambda k: jax.random.normal(k, (2,)),
        lambda x: norm.logpdf(x).sum(),
        lambda x: norm.logpdf(np.array([1.5, -0.5]), x, 0.7).sum(),
        annealing.linear(6),
        blackjax.hmc,
        64,
        kernel_params=dict(step_size=0.3, inverse_mass_matrix=np.ones(2), num_integration_steps=3),
        ess_threshold=0.9,
        constrain_fn=constrain_fn,
    )


@pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 (forced) host devices")
def test_sharded_equals_unsharded():
    mesh = sharding.particle_mesh()
    assert mesh.devices.size == 4
    a = jax.jit(lambda k: _run(k, None))(jax.random.key(0))
    b = jax.jit(lambda k: _run(k, sharding.constrain_fn(mesh)))(jax.random.key(0))
    assert len(b.particles.sharding.device_set) == 4
    assert np.any(a.resampled)
    np.testing.assert_array_equal(a.ancestors, b.ancestors)
    np.testing.assert_allclose(a.particles, b.particles, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(a.log_Z), float(b.log_Z), rtol=1e-5)
    x = sharding.shard(a.particles, mesh)
    assert len(x.sharding.device_set) == 4


def test_shard_error():
    mesh = sharding.particle_mesh()
    with pytest.raises(ValueError, match="divisible"):
        sharding.shard(np.zeros((mesh.devices.size * 2 + 1, 2)), mesh)
