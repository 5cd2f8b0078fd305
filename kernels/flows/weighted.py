r"""Weighted outputs of deterministic samplers.

A deterministic measure-preserving flow visits states $x_t$ and spends a time $\tau_t$ in each
(discrete deterministic Gibbs), or visits points on a uniform time grid (continuous flows, all
$\tau_t$ equal). Estimates are time averages

$$ \hat E f = \frac{\sum_t \tau_t f(x_t)}{\sum_t \tau_t}, $$

and an unweighted view is obtained by systematic resampling of the visited states with
probabilities $\tau_t / \sum_s \tau_s$.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.types import Array, ArrayTree, PRNGKey

__all__ = ["weighted_mean", "resample"]


def _check_weights(weights: Array, name: str = "weights") -> None:
    if isinstance(weights, jax.core.Tracer):
        return
    w = jnp.asarray(weights)
    if not bool(jnp.all(jnp.isfinite(w) & (w >= 0))):
        raise ValueError(f"{name} must be finite and non-negative (times spent in each state).")


def weighted_mean(values: Array, weights: Array, axis: int = 0) -> Array:
    """Time-weighted average $\\sum_t w_t f_t / \\sum_t w_t$ along ``axis``.

    Args:
        values: $f(x_t)$; ``weights`` broadcasts against its leading axes (trailing axes are
            kept, e.g. one column per coordinate).
        weights: times $w_t \\ge 0$, shape ``values.shape[:weights.ndim]``.
        axis: the time axis (an axis of ``weights``).

    Returns:
        The weighted average, ``values`` without ``axis``.
    """
    _check_weights(weights)
    values, weights = jnp.asarray(values), jnp.asarray(weights)
    if values.shape[: weights.ndim] != weights.shape:
        raise ValueError(
            f"weights of shape {weights.shape} must match the leading axes of values "
            f"{values.shape}."
        )
    w = jnp.expand_dims(weights, tuple(range(weights.ndim, values.ndim)))
    return jnp.sum(w * values, axis=axis) / jnp.sum(weights, axis=axis)


def resample(key: PRNGKey, positions: ArrayTree, weights: Array, num_samples: int) -> ArrayTree:
    """Unweighted view: systematic resampling of the visited states by their times.

    Args:
        key: PRNG key.
        positions: visited states, a pytree whose leaves have a leading time axis of length T.
        weights: times spent, shape (T,).
        num_samples: number of unweighted draws.

    Returns:
        ``num_samples`` states (pytree like ``positions``) drawn with probabilities
        proportional to ``weights`` (systematic resampling: the count of state $t$ differs from
        ``num_samples * w_t / sum(w)`` by less than one).
    """
    _check_weights(weights)
    cum = jnp.cumsum(weights) / jnp.sum(weights)
    u = (jax.random.uniform(key) + jnp.arange(num_samples)) / num_samples
    idx = jnp.clip(jnp.searchsorted(cum, u), 0, weights.shape[0] - 1)
    return jax.tree.map(lambda x: jnp.asarray(x)[idx], positions)
