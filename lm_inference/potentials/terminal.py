"""Terminal potentials: ``log phi(s)`` of the complete sequence, from any JAX function of the
``[T]`` tokens (stateless :class:`~lm_inference.potentials.Potential` s with only ``complete``)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from kernels.types import Array

__all__ = ["indicator", "threshold", "contains_token", "ends_with"]


def indicator(event: Callable[[Array], Array]) -> Callable:
    """``log phi(s) = 0`` if ``event(s)`` else ``-inf`` (``event``: ``[T] -> bool``)."""

    def log_phi(tokens):
        return jnp.where(event(tokens), 0.0, -jnp.inf)

    return log_phi


def threshold(score: Callable[[Array], Array], c: float, soft: float | None = None) -> Callable:
    """``phi = 1[score(s) >= c]``, or with ``soft`` the smooth ``log sigmoid((score - c) / soft)``
    (both ``phi <= 1``)."""

    def log_phi(tokens):
        x = score(tokens) - c
        if soft is None:
            return jnp.where(x >= 0, 0.0, -jnp.inf)
        return jax.nn.log_sigmoid(x / soft)

    return log_phi


def contains_token(token_id: int) -> Callable:
    """``phi = 1[token_id in s]``."""
    return indicator(lambda s: jnp.any(s == token_id))


def ends_with(token_id: int) -> Callable:
    """``phi = 1[s_T == token_id]``."""
    return indicator(lambda s: s[-1] == token_id)
