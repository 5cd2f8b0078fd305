r"""Deterministic measure-preserving dynamics (Neklyudov, Bondesan, Welling, arXiv 2106.10188).

Discrete deterministic Gibbs. The state is $x \in \prod_i \{0, \dots, K_i - 1\}$ together with a
position $u_i \in [0, 1)$ inside the unit cell of each coordinate. Each coordinate moves with speed

$$ \dot u_i = c_i / p(x_i \mid x_{-i}). $$

The flux $p(x)\,\dot u_i = p(x_{-i})\,c_i$ does not depend on $x_i$, so the piecewise-constant
velocity field has $\mathrm{div}(p v) = 0$ across every cell border (paper, Sec. 4): the flow
preserves $p(x)\,du$. The coordinate that reaches its border first, after time
$\tau_i = (1 - u_i)\,p(x_i \mid x_{-i}) / c_i$, advances ($x_i \leftarrow x_i + 1 \bmod K_i$,
$u_i \leftarrow 0$); every other $u_j$ moves by $\tau\,c_j / p(x_j \mid x_{-j})$. The time spent in
a state is its weight: $\hat E f = \sum_t \tau_t f(x_t) / \sum_t \tau_t$.

Weighted outputs are first-class: :func:`weighted_mean` forms the estimate, and :func:`resample`
gives an unweighted view (systematic resampling of the visited states by their times).
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
    "weighted_mean",
    "resample",
    "ising_log_joint",
]


class DGibbsState(NamedTuple):
    """State of discrete deterministic Gibbs.

    Attributes:
        position: integer state $x$, shape (d,).
        cell: positions $u \\in [0, 1)$ inside the unit cells, shape (d,).
        speed: constants $c_i > 0$, shape (d,).
    """

    position: Array
    cell: Array
    speed: Array


class DGibbsInfo(NamedTuple):
    """One event: the state that was occupied, the time spent in it (its weight), which
    coordinate advanced, and the number of log-joint evaluations spent (sum of K_i)."""

    position: Array
    weight: Array
    moved: Array
    num_density_evals: Array


def _conditionals(log_joint, x, supports):
    """log p(x_i = v | x_-i) for every i and v < K_max (padded with -inf), shape (d, K_max)."""
    d, kmax = x.shape[0], int(max(supports))
    values = jnp.arange(kmax)
    valid = values[None, :] < jnp.asarray(supports)[:, None]

    def row(i):
        xs = jnp.where(valid[i][:, None], x[None, :].repeat(kmax, 0).at[:, i].set(values), x[None])
        return jax.vmap(log_joint)(xs)

    lj = jax.vmap(row)(jnp.arange(d))
    lj = jnp.where(valid, lj, -jnp.inf)
    return lj - jax.nn.logsumexp(lj, axis=1, keepdims=True)


def discrete_deterministic_gibbs(
    log_joint: Callable[[Array], Array], supports: list[int] | tuple[int, ...]
) -> tuple[Callable, Callable]:
    """Discrete deterministic Gibbs for a finite state space.

    Args:
        log_joint: $\\log p(x)$ up to a constant, for an int vector ``x`` of shape (d,).
        supports: sizes $K_i \\ge 2$ of each coordinate's support (length d).

    Returns:
        ``(init, step)``: ``init(key, position, speed=None) -> DGibbsState`` draws the cell
        positions uniformly (and speeds $c_i \\sim U(0.5, 1.5)$ unless given);
        ``step(state) -> (state, info)`` is deterministic and processes one event.
    """
    supports = tuple(int(k) for k in np.asarray(supports).ravel())
    if len(supports) == 0 or min(supports) < 1:
        raise ValueError(f"supports must be a non-empty list of positive sizes, got {supports}.")
    d = len(supports)
    kvec = jnp.asarray(supports)
    evals = sum(supports)

    def init(key: PRNGKey, position, speed=None) -> DGibbsState:
        position = jnp.asarray(position, jnp.int32)
        if position.shape != (d,):
            raise ValueError(f"position must have shape ({d},), got {position.shape}.")
        k1, k2 = jax.random.split(key)
        cell = jax.random.uniform(k1, (d,))
        if speed is None:
            speed = jax.random.uniform(k2, (d,), minval=0.5, maxval=1.5)
        return DGibbsState(position, cell, jnp.asarray(speed, cell.dtype))

    def step(state: DGibbsState) -> tuple[DGibbsState, DGibbsInfo]:
        x = state.position
        logc = _conditionals(log_joint, x, supports)
        logp = jnp.take_along_axis(logc, x[:, None], axis=1)[:, 0]
        # time to reach the border: (1 - u) p / c, in log space for stability
        log_tau = jnp.log1p(-state.cell) + logp - jnp.log(state.speed)
        log_tau = jnp.where(kvec > 1, log_tau, jnp.inf)
        i = jnp.argmin(log_tau)
        tau = jnp.exp(log_tau[i])
        cell = state.cell + jnp.exp(log_tau[i] - logp + jnp.log(state.speed))
        cell = jnp.clip(cell, 0.0, 1.0).at[i].set(0.0)
        newx = x.at[i].set((x[i] + 1) % kvec[i])
        info = DGibbsInfo(x, tau, i, jnp.asarray(evals, jnp.int32))
        return DGibbsState(newx, cell, state.speed), info

    return init, step


def weighted_mean(values: Array, weights: Array, axis: int = 0) -> Array:
    """$\\sum_t w_t f_t / \\sum_t w_t$ along ``axis`` (values broadcast against weights)."""
    w = jnp.expand_dims(weights, tuple(range(weights.ndim, values.ndim)))
    return jnp.sum(w * values, axis=axis) / jnp.sum(weights, axis=axis)


def resample(key: PRNGKey, positions: Array, weights: Array, num_samples: int) -> Array:
    """Unweighted view: systematic resampling of ``positions`` (T, ...) by ``weights`` (T,)."""
    cum = jnp.cumsum(weights) / jnp.sum(weights)
    u = (jax.random.uniform(key) + jnp.arange(num_samples)) / num_samples
    idx = jnp.clip(jnp.searchsorted(cum, u), 0, weights.shape[0] - 1)
    return positions[idx]


def ising_log_joint(shape: tuple[int, int], beta: float, field: float = 0.0) -> Callable:
    """Log joint of a free-boundary Ising model on a grid, spins $s = 2x - 1$, $x \\in \\{0,1\\}$.

    $\\log p(x) = \\beta \\sum_{\\langle ij\\rangle} s_i s_j + h \\sum_i s_i$ (up to a constant).
    """
    rows, cols = shape

    def log_joint(x):
        s = (2 * x - 1).reshape(rows, cols).astype(jnp.result_type(float))
        inter = jnp.sum(s[1:] * s[:-1]) + jnp.sum(s[:, 1:] * s[:, :-1])
        return beta * inter + field * jnp.sum(s)

    return log_joint
