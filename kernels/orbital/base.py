"""Orbital MCMC states, information and initialization (see :mod:`kernels.orbital`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kernels.types import Array, ArrayLikeTree, ArrayTree, LogDensityFn

DIVERGENCE_THRESHOLD = 1000.0


class OrbitalState(NamedTuple):
    """State of orbital HMC.

    Attributes:
        position: current position (pytree).
        momentum: current momentum (pytree like position).
        logdensity: log density at ``position``.
        logdensity_grad: gradient of the log density at ``position``.
        index: position $k$ of the current point in its orbit window (int32 scalar).
    """

    position: ArrayTree
    momentum: ArrayTree
    logdensity: Array
    logdensity_grad: ArrayTree
    index: Array


class OrbitalInfo(NamedTuple):
    """Information on one orbital transition.

    Attributes:
        acceptance_rate: mean over orbit points $j \\ne k$ of $\\min(1, w_j/w_k)$ (for dual averaging).
        is_accepted: whether the chosen point differs from the current one.
        is_divergent: whether some orbit point has log weight below the start's by more than 1000,
            or a non-finite one.
        orbit: the whole orbit window (states stacked along a leading axis of length P; unused
            slots repeat the current point and have weight 0).
        weights: normalized orbit weights, shape (P,), for Rao-Blackwellized estimates.
        log_weights: unnormalized log weights, shape (P,) (-inf for unused slots).
        chosen: index of the chosen point in the window.
        num_grad_evals: map applications (gradient evaluations for HMC) spent on this transition.
        transition: probabilities of moving from the current slot to each slot, shape (P,)
            (equal to ``weights`` for independent sampling).
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    orbit: ArrayTree
    weights: Array
    log_weights: Array
    chosen: Array
    num_grad_evals: Array
    transition: Array


def _where(pred, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def init(position: ArrayLikeTree, logdensity_fn: LogDensityFn) -> OrbitalState:
    """Initial state of (orbital / multinomial) HMC with zero momentum and index 0.

    Args:
        position: initial position (pytree).
        logdensity_fn: log density of the target.

    Returns:
        an :class:`OrbitalState`; the momentum is refreshed in the first step.
    """
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    momentum = jax.tree.map(jnp.zeros_like, position)
    return OrbitalState(position, momentum, logdensity, grad, jnp.zeros((), jnp.int32))
