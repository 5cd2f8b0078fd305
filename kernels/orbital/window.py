"""Orbit windows: $\\{T^{j-k} z\\}_{j}$ grown one map application at a time, in log space."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from kernels.orbital.base import _where
from kernels.types import Array, ArrayTree


class _Grow(NamedTuple):
    back: ArrayTree
    front: ArrayTree
    back_ld: Array
    front_ld: Array
    back_lw: Array
    front_lw: Array
    max_lw: Array
    nb: Array
    nf: Array
    points: ArrayTree
    logdets: Array
    logw: Array


def _grow(z0, signed_step, size, center, policy, logweight_fn=None):
    """Grow a window around ``z0`` (at slot ``center`` of ``size`` slots) one point at a time.

    ``policy(carry) -> int`` says where to go next: -1 backward, +1 forward, 0 stop. Returns the
    final carry: ``points`` (unused slots hold ``z0``), ``logdets`` and ``logw`` (unused: -inf).
    """
    zero = jnp.zeros((), jnp.result_type(float))
    ninf = jnp.full((size,), -jnp.inf, zero.dtype)
    lw0 = zero if logweight_fn is None else jnp.asarray(logweight_fn(z0), zero.dtype)
    lw0 = jnp.where(jnp.isfinite(lw0), lw0, -jnp.inf)
    points = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], size, axis=0), z0)
    int0 = jnp.zeros((), jnp.int32)
    carry = _Grow(
        z0, z0, zero, zero, lw0, lw0, lw0, int0, int0, points,
        ninf.at[center].set(0.0), ninf.at[center].set(lw0),
    )  # fmt: skip

    def body(c):
        back = policy(c) < 0
        new, ld = signed_step(_where(back, c.back, c.front), jnp.where(back, -1.0, 1.0))
        ld = jnp.where(back, c.back_ld, c.front_ld) + ld
        lw = ld if logweight_fn is None else logweight_fn(new) + ld
        lw = jnp.where(jnp.isfinite(lw), lw, -jnp.inf)
        slot = jnp.where(back, center - c.nb - 1, center + c.nf + 1)
        points = jax.tree.map(lambda b, x: b.at[slot].set(x), c.points, new)
        return _Grow(
            back=_where(back, new, c.back),
            front=_where(back, c.front, new),
            back_ld=jnp.where(back, ld, c.back_ld),
            front_ld=jnp.where(back, c.front_ld, ld),
            back_lw=jnp.where(back, lw, c.back_lw),
            front_lw=jnp.where(back, c.front_lw, lw),
            max_lw=jnp.maximum(c.max_lw, lw),
            nb=c.nb + back.astype(jnp.int32),
            nf=c.nf + (~back).astype(jnp.int32),
            points=points,
            logdets=c.logdets.at[slot].set(ld),
            logw=c.logw.at[slot].set(lw),
        )

    return jax.lax.while_loop(lambda c: policy(c) != 0, body, carry)


def orbit_window(
    z0: ArrayTree,
    k: Array,
    signed_step: Callable[[ArrayTree, Array], tuple[ArrayTree, Array]],
    period: int,
    num_points: Array | int | None = None,
) -> tuple[ArrayTree, Array]:
    """The window $\\{T^{j-k} z_0\\}_{j=0}^{n-1}$ and $\\log|\\det J_{T^{j-k}}(z_0)|$.

    Args:
        z0: the current point (pytree).
        k: its position in the window, int in [0, n).
        signed_step: ``signed_step(z, d) -> (z', logdet)`` applies $T$ for ``d = +1`` and
            $T^{-1}$ for ``d = -1`` and returns the log |det J| of the map applied.
        period: number of slots P (static).
        num_points: window length $n \\le P$ (may be traced); default P.

    Returns:
        ``(points, logdets)``: points stacked along a leading axis of length P (slot k holds z0),
        logdets of shape (P,), -inf for the unused slots $j \\ge n$. Costs n - 1 calls of
        ``signed_step``.
    """
    k = jnp.asarray(k, jnp.int32)
    out = _grow(z0, signed_step, period, k, _window_policy(k, period, num_points))
    return out.points, out.logdets


def _window_policy(k, period, num_points):
    """Grow backward until k points precede z0, then forward until the window has n points."""
    n = jnp.asarray(period if num_points is None else num_points, jnp.int32)

    def policy(c):
        return jnp.where(c.nb < k, -1, jnp.where(c.nf < n - 1 - k, 1, 0))

    return policy


def contracting_window(
    z0: ArrayTree,
    signed_step: Callable[[ArrayTree, Array], tuple[ArrayTree, Array]],
    logweight_fn: Callable[[ArrayTree], Array],
    max_steps: int,
    log_cutoff: float,
) -> tuple[ArrayTree, Array, Array]:
    """Integrate both ways from ``z0`` until the log weight falls below the running maximum minus
    ``log_cutoff`` (or ``max_steps`` each way), then drop the points below the final maximum minus
    ``log_cutoff``.

    Args:
        z0: the current point.
        signed_step: see :func:`orbit_window`.
        logweight_fn: $\\log\\pi(z)$ up to a constant.
        max_steps: at most this many steps each way (static: the window has
            ``2 * max_steps + 1`` slots, ``z0`` in the middle).
        log_cutoff: relative log-weight cutoff.

    Returns:
        ``(points, log_weights, num_steps)``: log weights include the log-Jacobians, -inf for
        dropped and unused slots; ``num_steps`` map applications were spent.
    """

    def stopped(lw, c):
        return ~(lw >= c.max_lw - log_cutoff)

    def policy(c):
        back_open = (c.nb < max_steps) & ~stopped(c.back_lw, c)
        front_open = (c.nf < max_steps) & ~stopped(c.front_lw, c)
        go_back = back_open & ((c.nb <= c.nf) | ~front_open)
        return jnp.where(go_back, -1, jnp.where(front_open, 1, 0))

    out = _grow(z0, signed_step, 2 * max_steps + 1, max_steps, policy, logweight_fn)
    logw = jnp.where(out.logw >= out.max_lw - log_cutoff, out.logw, -jnp.inf)
    return out.points, logw, out.nb + out.nf
