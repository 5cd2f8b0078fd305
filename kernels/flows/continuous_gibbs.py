r"""Continuous deterministic Gibbs (Neklyudov, Bondesan, Welling, arXiv 2106.10188, Sec. 4).

All coordinates move at once, each through its own conditional distribution:

$$ \dot x_i = v_i(x) = \frac{c_i}{p(x_i \mid x_{-i})}, \qquad c_i > 0 . $$

Since $p(x)\,v_i(x) = c_i\,p(x_{-i})$ does not depend on $x_i$, $\mathrm{div}(p v) = 0$: the flow
preserves $p$. In the conditional-CDF coordinate $u_i = F_i(x_i \mid x_{-i})$ the component
$v_i e_i$ alone moves at constant speed, $\dot u_i = c_i$; leaving through $x_i = +\infty$
($u_i = 1$) it re-enters at $-\infty$ ($u_i = 0$) with the same flux $c_i\,p(x_{-i})$, so the
real line of each coordinate is a circle. The exact flow of component $i$ for a time $t$ is the
*conditional-quantile rotation*

$$ \varphi_i^t(x):\quad x_i \leftarrow F_i^{-1}\big(F_i(x_i \mid x_{-i}) + c_i t \bmod 1
   \,\big|\, x_{-i}\big), $$

which maps $p(\cdot \mid x_{-i})$ to itself, so $p(\varphi_i^t x)\,|\det J| = p(x)$ exactly. The
simultaneous flow is integrated by the symmetric (Strang) composition of these exact rotations
over the coordinates (``splitting="strang"``: $2d - 1$ rotations per step, second order in $h$),
or by one sweep (``"sequential"``: $d$ rotations, first order); either composition preserves $p$
exactly, for any step size $h$. The chain is deterministic given the start and the speeds;
estimates are time averages with equal weights $h$ (:func:`kernels.flows.weighted_mean`).

The conditionals come from the user (:class:`Conditionals`: conditional CDF and quantile
function, for example Gaussian conditionals), or from quadrature on a grid for low dimensions
(:func:`grid_conditionals`): the target becomes the piecewise-constant density
$\tilde p(x) = p(m(x))$ on a box ($m$ maps each coordinate to the midpoint of its grid cell),
whose conditionals are exact piecewise-linear CDFs; the sampler then targets $\tilde p$ exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.flows.divergence_free import SubFlow
from kernels.types import Array, LogDensityFn, PRNGKey

__all__ = [
    "Conditionals",
    "CGibbsState",
    "CGibbsInfo",
    "grid_conditionals",
    "conditional_rotation",
    "gibbs_sub_flows",
    "continuous_deterministic_gibbs",
]


class Conditionals(NamedTuple):
    """One-dimensional full conditionals $p(x_i \\mid x_{-i})$ of a continuous target.

    Attributes:
        cdf: ``cdf(x, i) -> F(x_i | x_-i)`` in [0, 1] (``i`` may be traced).
        icdf: ``icdf(u, x, i) -> F^{-1}(u | x_-i)`` (ignores ``x[i]``).
        logpdf: ``logpdf(x, i) -> log p(x_i | x_-i)``, optional: only needed for the
            log-Jacobian of the rotations inside :func:`kernels.flows.divergence_free_flow`.
    """

    cdf: Callable[[Array, Array], Array]
    icdf: Callable[[Array, Array, Array], Array]
    logpdf: Callable[[Array, Array], Array] | None = None


class CGibbsState(NamedTuple):
    """State of continuous deterministic Gibbs.

    Attributes:
        position: $x$, shape (d,).
        speed: the constants $c_i > 0$, shape (d,).
    """

    position: Array
    speed: Array


class CGibbsInfo(NamedTuple):
    """One step of continuous deterministic Gibbs.

    Attributes:
        position: the point at the start of the step, shape (d,).
        weight: the time $h$ it stands for (equal weights).
        num_conditional_evals: one-dimensional conditionals evaluated (CDF and quantile).
    """

    position: Array
    weight: Array
    num_conditional_evals: Array


def _quantile(u):
    """Keep u inside (0, 1): F^{-1}(0) and F^{-1}(1) are infinite for unbounded supports."""
    tiny = jnp.finfo(jnp.result_type(u)).tiny
    return jnp.clip(u, tiny, 1.0 - jnp.finfo(jnp.result_type(u)).epsneg)


def conditional_rotation(conditionals: Conditionals, i: Array, shift: Array, x: Array) -> Array:
    """$x_i \\leftarrow F_i^{-1}(F_i(x_i \\mid x_{-i}) + \\text{shift} \\bmod 1 \\mid x_{-i})$.

    Args:
        conditionals: the :class:`Conditionals`.
        i: coordinate (may be traced).
        shift: $c_i t$.
        x: the point, shape (d,).

    Returns:
        The rotated point (only coordinate ``i`` changes).
    """
    u = jnp.mod(conditionals.cdf(x, i) + shift, 1.0)
    return x.at[i].set(conditionals.icdf(_quantile(u), x, i))


def gibbs_sub_flows(conditionals: Conditionals, speed: Array) -> list[SubFlow]:
    """The exact flows of the components $v_i e_i$, for :func:`kernels.flows.flow_map`.

    Args:
        conditionals: the :class:`Conditionals` (with ``logpdf``: the log-Jacobian of a rotation
            is $\\log p(x_i \\mid x_{-i}) - \\log p(x'_i \\mid x_{-i})$).
        speed: $c$, shape (d,).

    Returns:
        One sub-flow per coordinate, ``(x, t) -> (x', log|det J|)``.
    """
    if conditionals.logpdf is None:
        raise ValueError(
            "gibbs_sub_flows needs Conditionals.logpdf for the log-Jacobian of the rotations; "
            "continuous_deterministic_gibbs does not."
        )
    speed = jnp.asarray(speed)

    def sub_flow(i):
        def phi(x, t):
            new = conditional_rotation(conditionals, i, speed[i] * t, x)
            return new, conditionals.logpdf(x, i) - conditionals.logpdf(new, i)

        return phi

    return [sub_flow(i) for i in range(speed.shape[0])]


def _schedule(dim: int, splitting: str) -> tuple[np.ndarray, np.ndarray]:
    if splitting == "strang":
        coords = [*range(dim - 1), dim - 1, *reversed(range(dim - 1))]
        fracs = [0.5] * (dim - 1) + [1.0] + [0.5] * (dim - 1)
    elif splitting == "sequential":
        coords, fracs = list(range(dim)), [1.0] * dim
    else:
        raise ValueError(f"splitting must be 'strang' or 'sequential', got {splitting!r}.")
    return np.asarray(coords, np.int32), np.asarray(fracs)


def continuous_deterministic_gibbs(
    conditionals: Conditionals, dim: int, step_size: float = 1.0, splitting: str = "strang"
) -> tuple[Callable, Callable]:
    """Continuous deterministic Gibbs: the split flow of conditional-quantile rotations.

    Args:
        conditionals: the :class:`Conditionals` (user-supplied, or :func:`grid_conditionals`).
        dim: $d$.
        step_size: $h$ (time per step; coordinate $i$ turns by $c_i h$ of its conditional per
            step). Any $h > 0$ preserves $p$ exactly.
        splitting: ``"strang"`` (symmetric, $2d - 1$ rotations per step) or ``"sequential"``.

    Returns:
        ``(init, step)``: ``init(key, position, speed=None) -> CGibbsState`` (speeds
        $c_i \\sim U(0.5, 1.5)$ unless given); ``step(state) -> (state, info)`` is
        deterministic (:class:`CGibbsInfo`: the point and its time weight $h$).
    """
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}.")
    if not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")
    coords, fracs = _schedule(int(dim), splitting)

    def init(key: PRNGKey, position, speed=None) -> CGibbsState:
        position = jnp.asarray(position, jnp.result_type(float))
        if position.shape != (dim,):
            raise ValueError(f"position must have shape ({dim},), got {position.shape}.")
        if speed is None:
            speed = jax.random.uniform(key, (dim,), minval=0.5, maxval=1.5)
        speed = jnp.broadcast_to(jnp.asarray(speed, position.dtype), (dim,))
        if not isinstance(speed, jax.core.Tracer) and not bool(jnp.all(speed > 0)):
            raise ValueError(f"speed must be positive, got {speed}.")
        return CGibbsState(position, speed)

    def step(state: CGibbsState) -> tuple[CGibbsState, CGibbsInfo]:
        def body(x, inp):
            i, frac = inp
            return conditional_rotation(conditionals, i, state.speed[i] * step_size * frac, x), None

        x, _ = jax.lax.scan(body, state.position, (jnp.asarray(coords), jnp.asarray(fracs)))
        info = CGibbsInfo(
            state.position,
            jnp.asarray(step_size, state.position.dtype),
            jnp.asarray(len(coords), jnp.int32),
        )
        return CGibbsState(x, state.speed), info

    return init, step


def grid_conditionals(
    logdensity_fn: LogDensityFn, lower: Array, upper: Array, num_cells: int = 256
) -> tuple[Conditionals, LogDensityFn]:
    """Conditionals by quadrature on a grid: the piecewise-constant target on a box.

    The box $\\prod_i [l_i, u_i]$ is cut into ``num_cells`` cells per coordinate; the target is
    $\\tilde p(x) = p(m(x))$ on the box ($m$: midpoint of the cell of every coordinate), zero
    outside. Its conditional given $x_{-i}$ is piecewise constant in $x_i$ with masses
    $\\propto p(g_c, m(x_{-i}))$ at the cell midpoints $g_c$, so the CDF is piecewise linear and
    its inverse exact. Each conditional costs ``num_cells`` evaluations of ``logdensity_fn``
    (vectorized): for low dimensions.

    Args:
        logdensity_fn: $\\log p(x)$, ``x`` of shape (d,).
        lower: lower corner $l$, shape (d,).
        upper: upper corner $u$, shape (d,).
        num_cells: cells per coordinate.

    Returns:
        ``(conditionals, logdensity_grid)``: the :class:`Conditionals` of $\\tilde p$ and
        $\\log \\tilde p$ (unnormalized, $-\\infty$ outside the box).
    """
    lower = jnp.asarray(lower, jnp.result_type(float))
    upper = jnp.asarray(upper, lower.dtype)
    if lower.ndim != 1 or lower.shape != upper.shape:
        raise ValueError(
            f"lower and upper must be vectors of the same length, got {lower.shape} and "
            f"{upper.shape}."
        )
    if not bool(jnp.all(upper > lower)):
        raise ValueError("upper must exceed lower in every coordinate.")
    if int(num_cells) != num_cells or num_cells < 2:
        raise ValueError(f"num_cells must be an integer >= 2, got {num_cells!r}.")
    n = int(num_cells)
    width = (upper - lower) / n

    def cell_of(x):
        return jnp.clip(jnp.floor((x - lower) / width).astype(jnp.int32), 0, n - 1)

    def midpoint(x):
        return lower + (cell_of(x) + 0.5) * width

    def log_masses(x, i):
        """log p(g_c, m(x_-i)) over the cells c of coordinate i, normalized."""
        m = midpoint(x)
        grid = lower[i] + (jnp.arange(n) + 0.5) * width[i]
        lp = jax.vmap(lambda g: logdensity_fn(m.at[i].set(g)))(grid)
        lp = jnp.where(jnp.isfinite(lp), lp, -jnp.inf)
        return lp - jax.nn.logsumexp(lp)

    def cum_masses(x, i):
        w = jnp.exp(log_masses(x, i))
        return jnp.concatenate([jnp.zeros((1,), w.dtype), jnp.cumsum(w)]), w

    def cdf(x, i):
        cum, w = cum_masses(x, i)
        c = cell_of(x)[i]
        frac = jnp.clip((x[i] - lower[i]) / width[i] - c, 0.0, 1.0)
        return cum[c] + frac * w[c]

    def icdf(u, x, i):
        cum, w = cum_masses(x, i)
        u = u * cum[-1]
        c = jnp.clip(jnp.searchsorted(cum, u, side="right") - 1, 0, n - 1)
        frac = jnp.where(w[c] > 0, (u - cum[c]) / jnp.where(w[c] > 0, w[c], 1.0), 0.5)
        return lower[i] + (c + jnp.clip(frac, 0.0, 1.0)) * width[i]

    def logpdf(x, i):
        return log_masses(x, i)[cell_of(x)[i]] - jnp.log(width[i])

    def logdensity_grid(x):
        inside = jnp.all((x >= lower) & (x <= upper))
        return jnp.where(inside, logdensity_fn(midpoint(x)), -jnp.inf)

    return Conditionals(cdf, icdf, logpdf), logdensity_grid
