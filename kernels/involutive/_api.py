"""Shared boundary checks and the BlackJAX ``GenerateSamplingAPI`` wrapper for the built-ins."""

import blackjax.mcmc.metrics as metrics
import jax
import jax.numpy as jnp
import numpy as np
from blackjax import GenerateSamplingAPI
from jax.flatten_util import ravel_pytree

from kernels.involutive.base import InvolutiveState

MassMatrix = jax.Array | np.ndarray | None  # (d,) diagonal, (d, d) dense, or None (identity)

__all__ = [
    "MassMatrix",
    "GenerateSamplingAPI",
    "check_position",
    "check_mass_matrix",
    "default_inverse_mass_matrix",
]


def check_position(position) -> None:
    """Gradient-based kernels need a pytree of floating-point arrays."""
    leaves = jax.tree.leaves(position)
    if not leaves:
        raise ValueError("The initial position is an empty pytree.")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"The position must hold floating-point arrays, got dtype {jnp.result_type(leaf)}; "
                "cast it with jnp.asarray(x, dtype=float)."
            )


def check_mass_matrix(position, inverse_mass_matrix) -> None:
    """``inverse_mass_matrix`` must be ``(d,)`` or ``(d, d)`` with ``d`` the ravelled size."""
    if inverse_mass_matrix is None or isinstance(inverse_mass_matrix, jax.core.Tracer):
        return
    d = ravel_pytree(position)[0].size
    shape = jnp.shape(inverse_mass_matrix)
    if shape not in ((d,), (d, d)):
        raise ValueError(
            f"inverse_mass_matrix has shape {shape} but the ravelled position has {d} entries; "
            f"pass a diagonal of shape ({d},) or a dense matrix of shape ({d}, {d})."
        )


def default_inverse_mass_matrix(position, inverse_mass_matrix):
    """Identity (as a diagonal of ones) when ``inverse_mass_matrix`` is None."""
    if inverse_mass_matrix is None:
        flat = ravel_pytree(position)[0]
        return jnp.ones(flat.shape, flat.dtype)
    return inverse_mass_matrix


def checked_init(init_fn, logdensity_fn, inverse_mass_matrix=None):
    """``init(position)`` with position and mass-matrix checks, for ``SamplingAlgorithm``."""

    def init(position, rng_key=None) -> InvolutiveState:
        del rng_key
        check_position(position)
        check_mass_matrix(position, inverse_mass_matrix)
        return init_fn(position, logdensity_fn)

    return init


def metric_factory(inverse_mass_matrix):
    """``position -> Metric``: BlackJAX's metric, identity (diagonal of ones) when None."""
    if inverse_mass_matrix is not None:
        metric = metrics.default_metric(inverse_mass_matrix)
        return lambda position: metric
    return lambda position: metrics.default_metric(default_inverse_mass_matrix(position, None))
