"""The generic periodic orbital kernel for any bijection with a log-Jacobian, and
Rao-Blackwellized orbit averages."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from kernels.orbital.base import OrbitalInfo
from kernels.orbital.hmc import _check, _check_rotation
from kernels.orbital.transition import orbit_info, orbital_step
from kernels.types import Array, ArrayTree, LogDensityFn


class PeriodicState(NamedTuple):
    """State of the generic periodic orbital kernel: point ``position``, slot ``index``."""

    position: ArrayTree
    index: Array


def periodic_orbital(
    logdensity_fn: LogDensityFn,
    bijection: Callable[[ArrayTree], tuple[ArrayTree, Array]],
    inverse: Callable[[ArrayTree], tuple[ArrayTree, Array]],
    period: int,
    index_shift: int | None = None,
    rotation: float | None = None,
) -> SamplingAlgorithm:
    """Orbital kernel for any bijection $T$ that reports its log |det J|.

    Chooses from the window $\\{T^{j-k} z\\}$ with weights $\\pi(T^{j-k}z)|\\det J_{T^{j-k}}(z)|$
    (arXiv 2010.08047, Sec. 3), then shifts the slot deterministically (``index_shift``) or
    draws it uniformly (``None``). ``info`` holds the whole orbit, its normalized weights and
    the transition probabilities from the current slot.

    Args:
        logdensity_fn: log density (w.r.t. the measure that $T$'s Jacobian refers to).
        bijection: ``T(z) -> (z', log|det J_T(z)|)``.
        inverse: ``T^{-1}(z) -> (z', log|det J_{T^{-1}}(z)|)``.
        period: window length P.
        index_shift: see :func:`build_kernel`.
        rotation: orbit choice, see :func:`choose` (None: independent sampling).

    Returns:
        a ``SamplingAlgorithm`` over :class:`PeriodicState`.
    """
    _check(1.0, period)
    rotation = _check_rotation(rotation)

    def signed_step(z, d):
        return jax.lax.cond(d > 0, bijection, inverse, z)

    def init_fn(position, rng_key=None):
        return PeriodicState(position, jnp.zeros((), jnp.int32))

    def step_fn(rng_key, state):
        key_idx, key_choice = jax.random.split(rng_key)
        if index_shift is None:
            k = jax.random.randint(key_idx, (), 0, period, jnp.int32)
        else:
            k = state.index
        z, j, points, logw, trans = orbital_step(
            key_choice, state.position, k, signed_step, logdensity_fn, period, rotation
        )
        new_index = (
            jnp.zeros((), jnp.int32)
            if index_shift is None
            else jnp.mod(j - index_shift, period).astype(jnp.int32)
        )
        return PeriodicState(z, new_index), orbit_info(logw, k, j, trans, points, period - 1)

    return SamplingAlgorithm(init_fn, step_fn)


def rao_blackwell(
    fn: Callable[[ArrayTree], Array],
    info: OrbitalInfo,
    positions_of: Callable[[ArrayTree], ArrayTree] | None = None,
) -> Array:
    """Rao-Blackwellized estimate $\\sum_j w_j f(z_j)$ over one orbit.

    Args:
        fn: test function of a position.
        info: an :class:`OrbitalInfo` (orbit and normalized weights).
        positions_of: maps the stacked orbit to stacked positions (default: ``orbit.position`` if
            present, else the orbit itself).

    Returns:
        the weighted average of ``fn`` over the orbit.
    """
    orbit = info.orbit
    if positions_of is not None:
        pos = positions_of(orbit)
    else:
        pos = getattr(orbit, "position", orbit)
    vals = jax.vmap(fn)(pos)
    w = info.weights.reshape((-1,) + (1,) * (vals.ndim - 1))
    return jnp.sum(jnp.where(w > 0, w * vals, 0.0), axis=0)
