r"""Annealing paths between a base ``pi_0`` and an unnormalized target ``pi_1``, and schedules.

Paths (log densities, unnormalized):

* geometric: \(\log \pi_\beta = (1 - \beta) \log \pi_0 + \beta \log \pi_1\);
* q-path / power mean (Masrani et al. 2021, "q-Paths", eq. 5):
  \(\pi_{\beta, q} = [(1 - \beta)\pi_0^{1-q} + \beta \pi_1^{1-q}]^{1/(1-q)}\), which tends to the
  geometric path as ``q -> 1`` and to the arithmetic mixture at ``q = 0``.

Schedules ``0 = beta_0 < ... < beta_K = 1``: linear, sigmoid (Grosse et al. 2015, eq. 9), and
ESS-adaptive: the next ``beta`` solves ``CESS(beta) = target`` by bisection (a fixed
number of iterations, jit-friendly). An adaptive schedule depends on the particles, which breaks
the unbiasedness of ``\hat Z`` and hence both bounds: run a pilot, freeze its betas with
:func:`freeze`, and use the frozen array for the lower- and upper-bound runs.

Schedules from a pilot's moments ``eta(beta) = E_{pi_beta}[log L]`` and variances
``Var_{pi_beta}[log L] = eta'(beta)`` on a grid (geometric path; e.g.
:func:`kernels.smc.thermodynamic.tempered_moments`): :func:`moment_spaced` (equal steps in
``eta``; Brekelmans et al. 2020, "All in the Exponential Family") and
:func:`length_spaced` (equal steps in the thermodynamic length ``int sqrt(eta') d beta``, the
constant-speed schedule that minimizes ``sum_t Δβ_t Δη_t``; Crooks 2007, "Measuring
thermodynamic length").
Both are host-side (numpy), frozen by construction.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels.smc import resampling as rs
from kernels.types import Array

__all__ = [
    "geometric",
    "q_path",
    "linear",
    "sigmoid",
    "next_beta_bisection",
    "freeze",
    "moment_spaced",
    "length_spaced",
]


def geometric(log_base: Array, log_target: Array, beta: Array) -> Array:
    """Geometric path ``(1 - beta) log pi_0 + beta log pi_1`` (elementwise)."""
    return (1.0 - beta) * log_base + beta * log_target


def q_path(q: float) -> Callable[[Array, Array, Array], Array]:
    """Power-mean path of order ``q`` (``q = 1``: geometric; ``q = 0``: mixture).

    Args:
        q: the order, in ``[0, 1]``.

    Returns:
        ``path(log_base, log_target, beta) -> log pi_{beta, q}``.
    """
    if q == 1.0:
        return geometric
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q-path order must be in [0, 1], got q={q}")
    a = 1.0 - q

    def path(log_base, log_target, beta):
        beta = jnp.asarray(beta, jnp.result_type(log_base, float))
        lb = jnp.where(beta < 1, jnp.log1p(-jnp.minimum(beta, 1.0)) + a * log_base, -jnp.inf)
        lt = jnp.where(beta > 0, jnp.log(jnp.maximum(beta, 1e-300)) + a * log_target, -jnp.inf)
        return jnp.logaddexp(lb, lt) / a

    return path


def linear(num_steps: int) -> np.ndarray:
    """``num_steps + 1`` equally spaced betas from 0 to 1."""
    return np.linspace(0.0, 1.0, num_steps + 1)


def sigmoid(num_steps: int, scale: float = 4.0) -> np.ndarray:
    """Sigmoidal schedule (Grosse, Maddison and Salakhutdinov, 2015, eq. 9).

    ``beta_t = (s(delta (2t/K - 1)) - s(-delta)) / (s(delta) - s(-delta))``, ``s`` the
    logistic function: dense steps near 0 and 1.

    Args:
        num_steps: ``K``.
        scale: ``delta`` (larger concentrates more steps at the ends).

    Returns:
        ``[K + 1]`` betas, exactly 0 and 1 at the ends.
    """
    s = 1 / (1 + np.exp(-scale * (2 * np.arange(num_steps + 1) / num_steps - 1)))
    lo, hi = 1 / (1 + np.exp(scale)), 1 / (1 + np.exp(-scale))
    b = (s - lo) / (hi - lo)
    b[0], b[-1] = 0.0, 1.0
    return b


def next_beta_bisection(
    log_weights: Array,
    log_increment_fn: Callable[[Array], Array],
    beta: Array,
    target_ess: float = 0.5,
    num_iterations: int = 40,
) -> Array:
    """ESS-adaptive next temperature by bisection on ``(beta, 1]``; jit-friendly.

    Finds the largest ``beta' <= 1`` whose conditional ESS (Zhou, Johansen and Aston, 2016)
    ``CESS = (sum_i W_i w_i)^2 / sum_i W_i w_i^2 >= target_ess`` (relative, in ``(0, 1]``, with
    ``w_i`` the incremental weights); if ``beta' = 1`` satisfies it, returns 1. Unlike the plain
    ESS it does not stall when the current weights are already uneven. Assumes the CESS
    decreases in ``beta'`` (true for the geometric path). The increment is signed correctly for any
    likelihood (``beta' > beta``), unlike a symmetric-only check.

    Args:
        log_weights: ``[N]`` current log weights.
        log_increment_fn: ``beta' -> [N]`` log incremental weights ``log pi_{beta'}(x) -
            log pi_beta(x)``.
        beta: current temperature.
        target_ess: relative ESS target in ``(0, 1)``.
        num_iterations: bisection steps (precision ``2^-num_iterations``).

    Returns:
        scalar next beta in ``(beta, 1]``.
    """
    log_target = jnp.log(target_ess)
    log_w = rs.normalize(log_weights)

    def ok(b):
        inc = log_increment_fn(b)
        inc = jnp.where(jnp.isnan(inc), -jnp.inf, inc)
        log_cess = 2 * jax.nn.logsumexp(log_w + inc) - jax.nn.logsumexp(log_w + 2 * inc)
        return log_cess >= log_target

    def bisect(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        good = ok(mid)
        return jnp.where(good, mid, lo), jnp.where(good, hi, mid)

    beta = jnp.asarray(beta, log_weights.dtype)
    lo, _ = jax.lax.fori_loop(0, num_iterations, bisect, (beta, jnp.ones_like(beta)))
    # guarantee progress even if a single step collapses the ESS
    lo = jnp.maximum(lo, beta + 1e-6 * (1 - beta))
    return jnp.where(ok(jnp.ones_like(beta)), 1.0, lo)


def freeze(betas: Array, num_steps: Array | int | None = None) -> np.ndarray:
    """Freeze a (pilot) schedule into a fixed float64 numpy array ``0 = b_0 < ... < b_K = 1``.

    Args:
        betas: betas of a pilot run (possibly a padded buffer).
        num_steps: ``K``, the number of valid steps after 0 (default: all).

    Returns:
        ``[K + 1]`` numpy array, to pass as ``betas`` to :func:`kernels.smc.tempering.run`
        for both the lower- and the upper-bound runs.
    """
    b = np.array(betas, np.float64)  # a copy: np.asarray of a float64 jax array is read-only
    if num_steps is not None:
        b = b[: int(num_steps) + 1]
    if b[0] != 0.0 or abs(b[-1] - 1.0) > 1e-6 or np.any(np.diff(b) <= 0):
        raise ValueError("a frozen schedule must increase strictly from 0 to 1")
    b[-1] = 1.0
    return b


def _invert_monotone(betas, values, num_steps: int, floor: float) -> np.ndarray:
    """Betas where the nondecreasing ``values(beta)`` crosses ``num_steps`` equal steps, mixed
    with a linear schedule of weight ``floor`` so that they increase strictly."""
    b = np.asarray(betas, np.float64)
    v = np.maximum.accumulate(np.asarray(values, np.float64))
    if b.ndim != 1 or b.shape != v.shape or b.size < 2 or b[0] != 0 or b[-1] != 1:
        raise ValueError(
            "need a grid of betas from 0 to 1 and one value per beta, got shapes "
            f"{b.shape} and {v.shape}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError("the pilot's moments or variances must be finite on the grid")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    span = v[-1] - v[0]
    if span <= 0:
        return linear(num_steps)
    # strictly increasing abscissa for interp (flat stretches get a negligible slope)
    v = v + 1e-12 * span * np.arange(v.size)
    targets = v[0] + (v[-1] - v[0]) * np.arange(num_steps + 1) / num_steps
    out = (1 - floor) * np.interp(targets, v, b) + floor * linear(num_steps)
    out[0], out[-1] = 0.0, 1.0
    return out


def moment_spaced(betas: Array, moments: Array, num_steps: int, floor: float = 1e-3) -> np.ndarray:
    """Schedule with equally spaced moments ``eta(beta_t) = E_{pi_beta_t}[log L]``.

    ``eta`` is nondecreasing on the geometric path (``eta' = Var[log L]``); with a pilot's
    estimates on a fine grid (made monotone by a running maximum), ``beta_t`` solves
    ``eta(beta_t) = eta(0) + (t / K) (eta(1) - eta(0))`` by linear interpolation.

    Args:
        betas: ``[M]`` pilot grid from 0 to 1.
        moments: ``[M]`` ``eta`` on the grid.
        num_steps: ``K``.
        floor: weight of a linear schedule mixed in so that the betas increase strictly.

    Returns:
        ``[K + 1]`` numpy betas, exactly 0 and 1 at the ends.
    """
    return _invert_monotone(betas, moments, num_steps, floor)


def length_spaced(
    betas: Array, variances: Array, num_steps: int, floor: float = 1e-3
) -> np.ndarray:
    """Constant-speed schedule: equal steps of the thermodynamic length
    ``Lambda(beta) = int_0^beta sqrt(Var_{pi_b}[log L]) db`` (trapezoid rule on the grid).

    Each step then has the same ``Δβ_t^2 Var``, so the symmetrized KL between neighbouring
    ``pi_beta`` is about ``Lambda(1)^2 / K^2`` per step, and ``sum_t Δβ_t Δη_t ≈ Lambda(1)^2 /
    K``, the least possible by Cauchy-Schwarz (``<= (eta(1) - eta(0)) / K``, the value for
    linear and moment-spaced schedules).

    Args:
        betas: ``[M]`` pilot grid from 0 to 1.
        variances: ``[M]`` ``Var_{pi_beta}[log L]`` on the grid.
        num_steps: ``K``.
        floor: weight of a linear schedule mixed in so that the betas increase strictly.

    Returns:
        ``[K + 1]`` numpy betas.
    """
    b = np.asarray(betas, np.float64)
    s = np.sqrt(np.maximum(np.asarray(variances, np.float64), 0.0))
    if b.shape != s.shape:
        raise ValueError(f"betas {b.shape} and variances {s.shape} must have the same shape")
    length = np.concatenate([[0.0], np.cumsum(np.diff(b) * (s[1:] + s[:-1]) / 2)])
    return _invert_monotone(b, length, num_steps, floor)
