r"""Discrete deterministic Gibbs (Neklyudov, Bondesan, Welling, arXiv 2106.10188, Sec. 4).

The state is $x \in \prod_i \{0, \dots, K_i - 1\}$ together with a position $u_i \in [0, 1)$
inside the unit cell of each coordinate. Each coordinate moves with speed

$$ \dot u_i = v_i(x) = c_i / p(x_i \mid x_{-i}). $$

The flux $p(x)\,v_i(x) = c_i\,p(x_{-i})$ does not depend on $x_i$, so the piecewise-constant
velocity field has $\mathrm{div}(p v) = 0$ across every cell border: the flow preserves
$p(x)\,du$ (the flux out of $x$ through the upper border of coordinate $i$ equals the flux into
$x + e_i$ through its lower border). The coordinate that reaches its border first, after time
$\tau_i = (1 - u_i)\,p(x_i \mid x_{-i}) / c_i$, advances ($x_i \leftarrow x_i + 1 \bmod K_i$,
$u_i \leftarrow 0$); every other $u_j$ moves by $\tau\,c_j / p(x_j \mid x_{-j})$. The time spent
in a state is its weight: $\hat E f = \sum_t \tau_t f(x_t) / \sum_t \tau_t$
(:func:`kernels.flows.weighted_mean`).

Each event needs $p(x_i \mid x_{-i})$ of every coordinate at the new state: $\log p(x)$ (kept in
the state: it was evaluated by the previous event) and one log-joint evaluation at each $x$ with
$x_i$ replaced by another value, $\sum_i (K_i - 1)$ evaluations (``info.num_density_evals``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.types import Array, PRNGKey

__all__ = [
    "DGibbsState",
    "DGibbsInfo",
    "discrete_deterministic_gibbs",
    "current_log_conditionals",
    "ising_log_joint",
    "DGibbsMoveState",
    "DGibbsMoveInfo",
    "deterministic_gibbs_move",
    "build_move_kernel",
    "move_init",
    "advance",
]


class DGibbsState(NamedTuple):
    """State of discrete deterministic Gibbs.

    Attributes:
        position: integer state $x$, shape (d,).
        cell: positions $u \\in [0, 1)$ inside the unit cells, shape (d,).
        speed: constants $c_i > 0$, shape (d,).
        logdensity: $\\log p(x)$ (up to the constant of ``log_joint``).
    """

    position: Array
    cell: Array
    speed: Array
    logdensity: Array


class DGibbsInfo(NamedTuple):
    """One event of discrete deterministic Gibbs.

    Attributes:
        position: the state that was occupied, shape (d,).
        weight: the time spent in it (its weight in estimates).
        moved: the coordinate that advanced at the end of the stay.
        num_density_evals: log-joint evaluations spent, $\\sum_i (K_i - 1)$.
    """

    position: Array
    weight: Array
    moved: Array
    num_density_evals: Array


def _check_supports(supports) -> tuple[int, ...]:
    supports = tuple(int(k) for k in np.asarray(supports).ravel())
    if len(supports) == 0 or min(supports) < 1:
        raise ValueError(f"supports must be a non-empty list of positive sizes, got {supports}.")
    return supports


def _other_values(log_joint, x, supports):
    """log p(x with x_i = x_i + m mod K_i), m = 1..K_max - 1 (-inf beyond K_i), shape (d, K_max-1)."""
    d, kmax = x.shape[0], int(max(supports))
    kvec = jnp.asarray(supports)
    shifts = jnp.arange(1, kmax)
    valid = shifts[None, :] < kvec[:, None]

    def row(i):
        values = jnp.mod(x[i] + shifts, kvec[i])
        return jax.vmap(lambda v: log_joint(x.at[i].set(v)))(values)

    return jnp.where(valid, jax.vmap(row)(jnp.arange(d)), -jnp.inf)


def _log_conditionals(lp_x, others):
    return lp_x - jnp.logaddexp(lp_x, jax.nn.logsumexp(others, axis=1))


def current_log_conditionals(
    log_joint: Callable[[Array], Array], x: Array, supports: tuple[int, ...]
) -> Array:
    """$\\log p(x_i \\mid x_{-i})$ of the current values, for every coordinate, shape (d,).

    Args:
        log_joint: $\\log p(x)$ up to a constant.
        x: integer state, shape (d,).
        supports: sizes $K_i$.

    Returns:
        The log conditionals ($0$ for coordinates with $K_i = 1$); costs
        $1 + \\sum_i (K_i - 1)$ evaluations of ``log_joint``.
    """
    supports = _check_supports(supports)
    if max(supports) == 1:
        return jnp.zeros(x.shape[0], jnp.result_type(float))
    return _log_conditionals(log_joint(x), _other_values(log_joint, x, supports))


def discrete_deterministic_gibbs(
    log_joint: Callable[[Array], Array], supports: list[int] | tuple[int, ...]
) -> tuple[Callable, Callable]:
    """Discrete deterministic Gibbs for a finite state space.

    Args:
        log_joint: $\\log p(x)$ up to a constant, for an int vector ``x`` of shape (d,).
        supports: sizes $K_i \\ge 1$ of each coordinate's support (length d).

    Returns:
        ``(init, step)``: ``init(key, position, speed=None) -> DGibbsState`` draws the cell
        positions uniformly (and speeds $c_i \\sim U(0.5, 1.5)$ unless given);
        ``step(state) -> (state, info)`` is deterministic and processes one event
        (:class:`DGibbsInfo`: the state occupied and the time spent in it).
    """
    supports = _check_supports(supports)
    d = len(supports)
    kvec = jnp.asarray(supports)
    evals = sum(k - 1 for k in supports)
    if max(supports) == 1:
        raise ValueError("Every coordinate has a single value: there is nothing to sample.")

    def init(key: PRNGKey, position, speed=None) -> DGibbsState:
        position = jnp.asarray(position, jnp.int32)
        if position.shape != (d,):
            raise ValueError(f"position must have shape ({d},), got {position.shape}.")
        if not isinstance(position, jax.core.Tracer) and bool(
            jnp.any((position < 0) | (position >= kvec))
        ):
            raise ValueError(f"position must satisfy 0 <= x_i < K_i = {supports}, got {position}.")
        k1, k2 = jax.random.split(key)
        cell = jax.random.uniform(k1, (d,))
        if speed is None:
            speed = jax.random.uniform(k2, (d,), minval=0.5, maxval=1.5)
        speed = jnp.broadcast_to(jnp.asarray(speed, cell.dtype), (d,))
        if not isinstance(speed, jax.core.Tracer) and not bool(jnp.all(speed > 0)):
            raise ValueError(f"speed must be positive, got {speed}.")
        return DGibbsState(position, cell, speed, jnp.asarray(log_joint(position), cell.dtype))

    def step(state: DGibbsState) -> tuple[DGibbsState, DGibbsInfo]:
        x = state.position
        others = _other_values(log_joint, x, supports)
        logp = _log_conditionals(state.logdensity, others)
        log_speed = jnp.log(state.speed) - logp  # log v_i = log c_i - log p(x_i | x_-i)
        # time to reach the border, (1 - u) / v, in log space
        log_tau = jnp.log1p(-state.cell) - log_speed
        log_tau = jnp.where(kvec > 1, log_tau, jnp.inf)
        i = jnp.argmin(log_tau)
        tau = jnp.exp(log_tau[i])
        cell = state.cell + jnp.exp(log_tau[i] + log_speed)
        cell = jnp.clip(cell, 0.0, 1.0).at[i].set(0.0)
        newx = x.at[i].set((x[i] + 1) % kvec[i])
        info = DGibbsInfo(x, tau, i.astype(jnp.int32), jnp.asarray(evals, jnp.int32))
        # log p of the new state (x_i + 1 mod K_i) was evaluated above
        return DGibbsState(newx, cell, state.speed, others[i, 0].astype(cell.dtype)), info

    return init, step


def ising_log_joint(shape: tuple[int, int], beta: float, field: float = 0.0) -> Callable:
    """Log joint of a free-boundary Ising model on a grid, spins $s = 2x - 1$, $x \\in \\{0,1\\}$.

    $\\log p(x) = \\beta \\sum_{\\langle ij\\rangle} s_i s_j + h \\sum_i s_i$ (up to a constant).

    Args:
        shape: grid shape ``(rows, cols)``; ``x`` is the flattened grid.
        beta: coupling $\\beta$.
        field: external field $h$.

    Returns:
        ``log_joint(x)`` for an int vector of length ``rows * cols``.
    """
    rows, cols = shape

    def log_joint(x):
        s = (2 * x - 1).reshape(rows, cols).astype(jnp.result_type(float))
        inter = jnp.sum(s[1:] * s[:-1]) + jnp.sum(s[:, 1:] * s[:, :-1])
        return beta * inter + field * jnp.sum(s)

    return log_joint


class DGibbsMoveState(NamedTuple):
    """State of the deterministic-Gibbs MCMC move: the integer state and its log density."""

    position: Array
    logdensity: Array


class DGibbsMoveInfo(NamedTuple):
    """Info of one move: ``acceptance_rate`` is 1 (no rejection), ``num_events`` crossed."""

    acceptance_rate: Array
    is_accepted: Array
    num_events: Array
    num_density_evals: Array


def advance(step: Callable, inner: DGibbsState, position: Array, remaining: Array, time):
    """Run the flow for ``time``: the state occupied then.

    Args:
        step: the ``step`` of :func:`discrete_deterministic_gibbs`.
        inner: its state (``inner.position`` is the state the next event leaves from).
        position: the state occupied now.
        remaining: the time left in the event in progress (0 at the start of one).
        time: the flow time to advance.

    Returns:
        ``(inner, position, remaining, num_events, num_density_evals)`` after ``time``.
    """

    def cond(c):
        return c[0] >= c[3]  # the event in progress ends before the time left

    def body(c):
        need, inner, _, remaining, events, evals = c
        inner, info = step(inner)
        evals = evals + info.num_density_evals
        return need - remaining, inner, info.position, info.weight, events + 1, evals

    zero = jnp.zeros((), jnp.int32)
    dtype = inner.cell.dtype
    c0 = (jnp.asarray(time, dtype), inner, position, jnp.asarray(remaining, dtype), zero, zero)
    need, inner, position, remaining, events, evals = jax.lax.while_loop(cond, body, c0)
    return inner, position, remaining - need, events, evals


def move_init(position, logdensity_fn: Callable[[Array], Array]) -> DGibbsMoveState:
    """BlackJAX ``init``: the integer state ``position`` (shape (d,)) and its log density."""
    position = jnp.asarray(position, jnp.int32)
    return DGibbsMoveState(position, jnp.asarray(logdensity_fn(position), jnp.result_type(float)))


def build_move_kernel(supports=None, time: float = 1.0) -> Callable:
    """Discrete deterministic Gibbs as an MCMC move (BlackJAX ``build_kernel`` contract).

    One transition redraws the cell positions $u \\sim U[0,1)^d$ and speeds $c_i \\sim U(0.5,
    1.5)$ and runs the flow for a fixed ``time``; the state occupied then is the new state. The
    flow preserves $p(x)\\,du$ for every $c$ and the redraw preserves it too, so the move leaves
    $p$ invariant with nothing to reject (the event times of the flow are not needed).

    Args:
        supports: the sizes $K_i$ (static; or pass them to the kernel).
        time: the flow time per transition (default 1; or pass it to the kernel).

    Returns:
        ``kernel(rng_key, state, logdensity_fn, supports=None, time=None) -> (state, info)``.
    """
    default_supports, default_time = supports, time

    def kernel(rng_key, state: DGibbsMoveState, logdensity_fn, supports=None, time=None):
        supports = default_supports if supports is None else supports
        if supports is None:
            raise ValueError("supports is required (as a kernel argument or in build_kernel).")
        supports = tuple(int(k) for k in np.asarray(supports).reshape(-1))
        time = default_time if time is None else time
        init, step = discrete_deterministic_gibbs(logdensity_fn, supports)
        inner = init(rng_key, state.position)
        dtype = inner.cell.dtype
        zero = jnp.zeros((), dtype)
        _, x, _, events, evals = advance(step, inner, inner.position, zero, time)
        one = jnp.ones((), dtype)
        new = DGibbsMoveState(x, jnp.asarray(logdensity_fn(x), dtype))
        return new, DGibbsMoveInfo(one, jnp.array(True), events, evals)

    return kernel


def _move_top_level(logdensity_fn: Callable[[Array], Array], supports, time: float = 1.0):
    """BlackJAX top-level API of :func:`build_move_kernel`: a ``SamplingAlgorithm`` with
    ``.init(position)`` and ``.step(rng_key, state)``.

    Args:
        logdensity_fn: $\\log p(x)$ up to a constant, for an int vector ``x`` of shape (d,).
        supports: the sizes $K_i$.
        time: the flow time per transition.
    """
    from blackjax.base import SamplingAlgorithm

    kernel = build_move_kernel(supports, time)

    def init_fn(position, rng_key=None):
        return move_init(position, logdensity_fn)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn)

    return SamplingAlgorithm(init_fn, step_fn)


def _move_api():
    from blackjax import GenerateSamplingAPI

    api = GenerateSamplingAPI(_move_top_level, move_init, build_move_kernel)
    api.__doc__ = _move_top_level.__doc__
    return api


deterministic_gibbs_move = _move_api()
