"""The move on one orbit: choose a point $j^* $ keeping the orbit weights $w$ invariant
(independent sampling or a weight rotation), and its :class:`~kernels.orbital.base.OrbitalInfo`."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from kernels.orbital.base import DIVERGENCE_THRESHOLD, OrbitalInfo
from kernels.orbital.window import _grow, _window_policy
from kernels.types import Array, ArrayTree, PRNGKey


def choose(
    rng_key: PRNGKey, log_weights: Array, k: Array, rotation: float | None = None
) -> tuple[Array, Array]:
    """Draw the next slot from an orbit with unnormalized ``log_weights``, current slot ``k``.

    Args:
        rng_key: PRNG key.
        log_weights: shape (P,), -inf allowed.
        k: current slot.
        rotation: None for independent sampling $j \\sim w$; $r \\in (0, 1)$ for the weight
            rotation $Q_{kj} = |(\\mathrm{arc}_k + r) \\cap \\mathrm{arc}_j| / w_k$ (falls back
            to independent sampling when $w_k = 0$).

    Returns:
        ``(j, transition)``: the chosen slot and the transition probabilities from ``k``.
    """
    size = log_weights.shape[0]
    stay = jax.nn.one_hot(k, size, dtype=jnp.result_type(float))
    lse = jax.nn.logsumexp(log_weights)
    w = jnp.exp(log_weights - lse)
    if rotation is None:
        trans = w
    else:
        cum = jnp.concatenate([jnp.zeros((1,), w.dtype), jnp.cumsum(w)])
        cum = cum / cum[-1]
        lo, hi = cum[:-1], cum[1:]
        a = cum[k] + rotation
        b = a + (hi[k] - lo[k])
        overlap = sum(
            jnp.maximum(0.0, jnp.minimum(b - s, hi) - jnp.maximum(a - s, lo)) for s in (0.0, 1.0)
        )
        total = jnp.sum(overlap)
        # an arc narrower than the rounding error of `a` is a point: the slot that holds a mod 1
        point = jnp.clip(jnp.searchsorted(cum, jnp.mod(a, 1.0), side="right") - 1, 0, size - 1)
        trans = jnp.where(
            total > 0, overlap / jnp.where(total > 0, total, 1.0), jax.nn.one_hot(point, size)
        )
    trans = jnp.where(jnp.isfinite(lse), trans, stay)  # no finite weight at all: stay
    j = jax.random.categorical(rng_key, jnp.log(trans))
    return j.astype(jnp.int32), trans


def orbital_step(
    rng_key: PRNGKey,
    z0: ArrayTree,
    k: Array,
    signed_step: Callable,
    logweight_fn: Callable[[ArrayTree], Array],
    period: int,
    rotation: float | None = None,
    num_points: Array | int | None = None,
) -> tuple[ArrayTree, Array, ArrayTree, Array, Array]:
    """Build the orbit window of ``(z0, k)``, weight it, and choose a point.

    Args:
        rng_key: PRNG key for the choice.
        z0: current point.
        k: its slot in the window.
        signed_step: see :func:`orbit_window`.
        logweight_fn: $\\log \\pi(z)$ up to a constant (for HMC: log density minus kinetic energy).
        period: number of slots P (static).
        rotation: see :func:`choose`.
        num_points: window length $n \\le P$ (may be traced); default P.

    Returns:
        the tuple ``(chosen_point, chosen_slot, points, log_weights, transition)``.
    """
    k = jnp.asarray(k, jnp.int32)
    out = _grow(z0, signed_step, period, k, _window_policy(k, period, num_points), logweight_fn)
    points, logw = out.points, out.logw
    j, trans = choose(rng_key, logw, k, rotation)
    chosen = jax.tree.map(lambda x: x[j], points)
    return chosen, j, points, logw, trans


def orbit_info(
    logw: Array,
    k: Array,
    j: Array,
    trans: Array,
    points: ArrayTree,
    num_grad_evals: Array | int,
    valid: Array | None = None,
) -> OrbitalInfo:
    """:class:`OrbitalInfo` of one transition from the window's log weights.

    Args:
        logw: unnormalized log weights, shape (P,).
        k: the current slot.
        j: the chosen slot.
        trans: transition probabilities from ``k`` (:func:`choose`).
        points: the stacked window.
        num_grad_evals: map applications spent.
        valid: slots in use (default: the finite weights).

    Returns:
        The info (acceptance statistic, divergence flag, normalized weights, ...).
    """
    finite = jnp.isfinite(logw)
    valid = finite if valid is None else valid
    others = valid & (jnp.arange(logw.shape[0]) != k)
    acc = jnp.exp(jnp.minimum(logw - logw[k], 0.0))
    acc = jnp.where(others & jnp.isfinite(acc), acc, 0.0)
    acceptance = jnp.sum(acc) / jnp.maximum(jnp.sum(others), 1)
    divergent = jnp.any(valid & ~(logw > logw[k] - DIVERGENCE_THRESHOLD))
    return OrbitalInfo(
        acceptance_rate=acceptance,
        is_accepted=j != k,
        is_divergent=divergent,
        orbit=points,
        weights=jnp.exp(logw - jax.nn.logsumexp(logw)),
        log_weights=logw,
        chosen=j,
        num_grad_evals=jnp.asarray(num_grad_evals, jnp.int32),
        transition=trans,
    )
