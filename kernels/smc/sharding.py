"""Shard SMC particles across local devices (``jax.sharding``, 1-d mesh on the particle axis).

Inside :func:`kernels.smc.sequential.run`, pass ``constrain_fn=constrain_fn(mesh)``: every
particle leaf and the log weights are constrained to ``NamedSharding(mesh, P("particles"))`` after
each step. Resampling (a global cumulative sum and a gather) and the log-sum-exp of the weights
are ordinary global JAX operations that XLA partitions with the needed collectives, so the result
is the same as unsharded for the same key (random bits do not depend on the sharding with
``jax_threefry_partitionable``, the default).
"""

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kernels.types import ArrayTree

__all__ = ["particle_mesh", "shard", "constrain_fn", "AXIS"]

AXIS = "particles"


def particle_mesh(devices=None) -> Mesh:
    """A 1-d ``Mesh`` named ``"particles"`` over ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def _spec(x):
    return PartitionSpec(AXIS, *([None] * (np.ndim(x) - 1)))


def shard(tree: ArrayTree, mesh: Mesh) -> ArrayTree:
    """Place every leaf (particle axis first) split along axis 0 over ``mesh``.

    Raises:
        ValueError: if the number of particles is not divisible by the number of devices.
    """
    size = mesh.devices.size
    for leaf in jax.tree.leaves(tree):
        if np.ndim(leaf) == 0 or leaf.shape[0] % size:
            raise ValueError(
                f"the particle axis ({np.shape(leaf)[:1]}) must be divisible by the number of "
                f"devices ({size}); choose num_particles as a multiple of {size}"
            )
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, _spec(x))), tree)


def constrain_fn(mesh: Mesh) -> Callable[[ArrayTree], ArrayTree]:
    """``tree -> tree`` sharding constraint along axis 0 (for ``sequential.run(constrain_fn=)``)."""

    def constrain(tree):
        return jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, _spec(x))), tree
        )

    return constrain
