"""Shard SMC particles across local devices (``jax.sharding``, 1-d mesh on the particle axis).

Pass ``mesh=particle_mesh()`` to :func:`kernels.smc.sequential.run` (or
:func:`kernels.smc.tempering.run`). The layout inside the jitted scan is:

* the particles (every leaf, particle axis first) are split along axis 0: proposals, MCMC
  moves and potentials run on each device's slice with no communication;
* the ``[N]`` log weights are *replicated*: one all-gather of ``N`` scalars per step, after
  which the log-sum-exp, the ESS, the resampling decision and the ancestors are computed
  redundantly on every device, by the same operations on the same array as unsharded;
* the gather ``particles[ancestors]`` sits inside the ``lax.cond`` of the resampling decision,
  so the particles cross devices (one all-gather) only on the steps that resample.

Hence two collectives per step at most, and the same key gives the same result as unsharded:
the random bits do not depend on the sharding (``jax_threefry_partitionable``, the default),
and no reduction is reassociated across shards. Sharding every array instead (weights
included) makes XLA partition the cumulative sum, the binary searches and every log-sum-exp,
with a collective each, which on forced CPU host devices cost a 10-50x slowdown.
"""

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kernels.types import ArrayTree

__all__ = [
    "particle_mesh",
    "mesh_from_option",
    "shard",
    "constrain_fn",
    "replicate_fn",
    "check_divisible",
    "particle_devices",
    "AXIS",
]

AXIS = "particles"


def particle_mesh(devices=None) -> Mesh:
    """A 1-d ``Mesh`` named ``"particles"`` over ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def _spec(x):
    return PartitionSpec(AXIS, *([None] * (np.ndim(x) - 1)))


def particle_devices(mesh: Mesh) -> int:
    """How many shards the particle axis is split into: the size of the mesh's ``'particles'``
    axis (all its devices for a 1-d mesh; a 2-d ``('particles', 'model')`` mesh replicates the
    particles over ``'model'``)."""
    return int(mesh.shape[AXIS]) if AXIS in mesh.axis_names else int(mesh.devices.size)


def check_divisible(num_particles: int, mesh: Mesh) -> None:
    """Raise a ``ValueError`` unless ``num_particles`` splits evenly over the particle axis."""
    size = particle_devices(mesh)
    if num_particles % size:
        raise ValueError(
            f"num_particles={num_particles} must be divisible by the number of devices "
            f"({size}) to shard the particles; choose a multiple of {size}"
        )


def mesh_from_option(shard: "bool | Mesh | None", num_particles: int) -> Mesh | None:
    """The particle mesh for a user's ``shard=`` option: ``False``/``None`` -> no mesh, ``True``
    -> all local devices, or a 1-d :class:`Mesh` on axis ``'particles'``; checks that
    ``num_particles`` splits evenly."""
    if shard is False or shard is None:
        return None
    mesh = particle_mesh() if shard is True else shard
    if not isinstance(mesh, Mesh) or mesh.axis_names != (AXIS,):
        raise TypeError(
            "shard must be True (all local devices), False, or a 1-d Mesh with axis "
            f"'particles' (kernels.smc.sharding.particle_mesh(devices)); got {shard!r}"
        )
    check_divisible(num_particles, mesh)
    return mesh


def shard(tree: ArrayTree, mesh: Mesh) -> ArrayTree:
    """Place every leaf (particle axis first) split along axis 0 over ``mesh``.

    Raises:
        ValueError: if the number of particles is not divisible by the number of devices.
    """
    size = particle_devices(mesh)
    for leaf in jax.tree.leaves(tree):
        if np.ndim(leaf) == 0 or leaf.shape[0] % size:
            raise ValueError(
                f"the particle axis ({np.shape(leaf)[:1]}) must be divisible by the number of "
                f"devices ({size}); choose num_particles as a multiple of {size}"
            )
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, _spec(x))), tree)


def constrain_fn(mesh: Mesh | None) -> Callable[[ArrayTree], ArrayTree]:
    """``tree -> tree`` sharding constraint splitting every leaf along axis 0 (identity when
    ``mesh`` is ``None``); for use inside ``jit``."""
    if mesh is None:
        return lambda tree: tree

    def constrain(tree):
        return jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, _spec(x))), tree
        )

    return constrain


def replicate_fn(mesh: Mesh | None) -> Callable[[ArrayTree], ArrayTree]:
    """``tree -> tree`` constraint replicating every leaf on all devices of ``mesh`` (identity
    when ``mesh`` is ``None``); for the ``[N]`` log weights inside ``jit``."""
    if mesh is None:
        return lambda tree: tree
    rep = NamedSharding(mesh, PartitionSpec())
    return lambda tree: jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, rep), tree)
