r"""Orbital MCMC (Neklyudov and Welling, "Orbital MCMC", arXiv 2010.08047).

A deterministic bijection $T$ with log-Jacobian $\log|\det J_T|$ generates orbits. On the
extended space $(z, k)$, $k \in \{0, \dots, P-1\}$, with target $\tilde\pi(z, k) = \pi(z) / P$,
the map $\tilde T(z, k) = (T z, k+1)$ for $k < P-1$ and $\tilde T(z, P-1) = (T^{-(P-1)} z, 0)$ is
periodic with period $P$. The orbit of $(z, k)$ is the window

$$ O(z, k) = \{(T^{j-k} z,\ j) : j = 0, \dots, P-1\}, $$

and the orbital kernel samples the next state from it with probabilities

$$ w_j \propto \pi(T^{j-k} z)\,|\det J_{T^{j-k}}(z)| \qquad \text{(paper, Sec. 3, eq. 7)}, $$

which leaves $\tilde\pi$ invariant for any $T$ (periodic or not). It is followed by a map that keeps
$\tilde\pi$ invariant and moves between orbits:

* a deterministic index shift $k \leftarrow (j^* - c) \bmod P$ (a permutation of $k$, so
  invariant; it makes the chain irreversible: the next window starts $c$ steps ahead or
  $P - c$ steps behind the current one), or
* a uniformly random window offset $k \sim U\{0..P-1\}$ drawn fresh every step, which is
  multinomial HMC that samples the whole trajectory and is invariant for every length $P$
  (BlackJAX's ``mhmc`` always puts the current point first, which is biased for $P > 1$).

For HMC, $z = (q, p)$, $T$ is one leapfrog step (volume preserving), $\pi(z) \propto
\exp(\log p(q) - K(p))$, and the momentum is partially refreshed between iterations,
$p \leftarrow \alpha p + \sqrt{1-\alpha^2}\,\xi$, $\xi \sim N(0, M)$.

All weights are computed in log space and normalized with ``logsumexp``: a log density offset
by $-10^4$ in float32 works (BlackJAX's ``orbital_hmc`` exponentiates unnormalized weights and
returns NaN there).

Each orbit costs $P - 1$ gradient evaluations: the window is built by one scan that, at step
$j$, moves either the backward end (for $j \le k$) or the forward end, so no work is masked.

``info.acceptance_rate`` is the mean over the other orbit points of $\min(1, w_j / w_k)$ (the
Metropolis acceptance of moving from the current point to each orbit point, averaged like NUTS's
mean acceptance over its trajectory): it is 1 for exact energy conservation and falls as the
integration error grows, so it is the statistic to feed to dual averaging (target about 0.8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc import integrators, metrics

from kernels.types import Array, ArrayLikeTree, ArrayTree, LogDensityFn, PRNGKey

__all__ = [
    "OrbitalState",
    "OrbitalInfo",
    "orbit_window",
    "orbital_step",
    "init",
    "build_kernel",
    "orbital_hmc",
    "multinomial_hmc",
    "contracting_orbital_hmc",
    "periodic_orbital",
    "rao_blackwell",
]

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
        orbit: the whole orbit window (states stacked along a leading axis of length P).
        weights: normalized orbit weights, shape (P,), for Rao-Blackwellized estimates.
        log_weights: unnormalized log weights, shape (P,).
        chosen: index of the chosen point in the window.
        num_grad_evals: gradient evaluations spent on this transition (P - 1).
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    orbit: ArrayTree
    weights: Array
    log_weights: Array
    chosen: Array
    num_grad_evals: Array


def _where(pred, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def orbit_window(
    z0: ArrayTree,
    k: Array,
    signed_step: Callable[[ArrayTree, Array], tuple[ArrayTree, Array]],
    period: int,
) -> tuple[ArrayTree, Array]:
    """The window $\\{T^{j-k} z_0\\}_{j=0}^{P-1}$ and $\\log|\\det J_{T^{j-k}}(z_0)|$.

    Args:
        z0: the current point (pytree).
        k: its position in the window, int in [0, P).
        signed_step: ``signed_step(z, d) -> (z', logdet)`` applies $T$ for ``d = +1`` and
            $T^{-1}$ for ``d = -1`` and returns the log |det J| of the map applied.
        period: window length P (static).

    Returns:
        ``(points, logdets)``: points stacked along a leading axis of length P (slot k holds z0),
        logdets of shape (P,). Costs P - 1 calls of ``signed_step``.
    """
    k = jnp.asarray(k, jnp.int32)
    zero = jnp.zeros((), jnp.result_type(float))
    if period == 1:
        return jax.tree.map(lambda x: x[None], z0), zero[None]

    def body(carry, j):
        back, back_ld, front, front_ld = carry
        go_back = j <= k
        src = _where(go_back, back, front)
        new, ld = signed_step(src, jnp.where(go_back, -1.0, 1.0))
        back = _where(go_back, new, back)
        front = _where(go_back, front, new)
        back_ld = jnp.where(go_back, back_ld + ld, back_ld)
        front_ld = jnp.where(go_back, front_ld, front_ld + ld)
        return (back, back_ld, front, front_ld), (new, jnp.where(go_back, back_ld, front_ld))

    js = jnp.arange(1, period, dtype=jnp.int32)
    _, (outs, lds) = jax.lax.scan(body, (z0, zero, z0, zero), js)
    # step j went to slot k - j (backward) or slot j (forward); gather slot s from step src(s)
    allz = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), z0, outs)
    all_ld = jnp.concatenate([zero[None], lds])
    s = jnp.arange(period, dtype=jnp.int32)
    src = jnp.where(s < k, k - s, jnp.where(s > k, s, 0))
    return jax.tree.map(lambda x: x[src], allz), all_ld[src]


def orbital_step(
    rng_key: PRNGKey,
    z0: ArrayTree,
    k: Array,
    signed_step: Callable,
    logweight_fn: Callable[[ArrayTree], Array],
    period: int,
    mask_log_cutoff: float | None = None,
) -> tuple[ArrayTree, Array, ArrayTree, Array, Array]:
    """Build the orbit window of ``(z0, k)``, weight it, and sample a point.

    Args:
        rng_key: PRNG key for the categorical choice.
        z0: current point.
        k: its slot in the window.
        signed_step: see :func:`orbit_window`.
        logweight_fn: $\\log \\pi(z)$ up to a constant (for HMC: log density minus kinetic energy).
        period: window length P.
        mask_log_cutoff: if set, drop points whose log weight is below the window maximum minus
            this value (contracting orbits; truncation, see :func:`contracting_orbital_hmc`).

    Returns:
        the tuple ``(chosen_point, chosen_slot, points, log_weights, log_normalized_weights)``.
    """
    points, logdets = orbit_window(z0, k, signed_step, period)
    logw = jax.vmap(logweight_fn)(points) + logdets
    logw = jnp.where(jnp.isfinite(logw), logw, -jnp.inf)
    if mask_log_cutoff is not None:
        logw = jnp.where(logw >= jnp.max(logw) - mask_log_cutoff, logw, -jnp.inf)
    logp = logw - jax.nn.logsumexp(logw)
    j = jax.random.categorical(rng_key, logp)
    chosen = jax.tree.map(lambda x: x[j], points)
    return chosen, j, points, logw, logp


def _acceptance(logw, k):
    logw_k = logw[k]
    others = jnp.arange(logw.shape[0]) != k
    acc = jnp.exp(jnp.minimum(logw - logw_k, 0.0))
    acc = jnp.where(jnp.isfinite(acc) & others, acc, 0.0)
    n = jnp.maximum(jnp.sum(others), 1)
    return jnp.sum(acc) / n


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


def _hamiltonian_parts(logdensity_fn, step_size, inverse_mass_matrix, friction=0.0):
    metric = metrics.default_metric(inverse_mass_matrix)
    integrator = integrators.velocity_verlet(logdensity_fn, metric.kinetic_energy)

    def signed_step(z, d):
        eps = d * step_size
        if friction:
            damp = jnp.exp(-0.5 * friction * eps)
            z = z._replace(momentum=jax.tree.map(lambda p: damp * p, z.momentum))
        z = integrator(z, eps)
        logdet = jnp.zeros((), jnp.result_type(float))
        if friction:
            z = z._replace(momentum=jax.tree.map(lambda p: damp * p, z.momentum))
            dim = sum(x.size for x in jax.tree.leaves(z.momentum))
            logdet = -friction * eps * dim
        return z, logdet

    def logweight(z):
        return z.logdensity - metric.kinetic_energy(z.momentum)

    return metric, signed_step, logweight


def build_kernel(
    index_shift: int | None = None, momentum_persistence: float = 0.0, period: int | None = None
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the orbital HMC transition (BlackJAX ``build_kernel`` contract).

    Args:
        index_shift: $c$ in the deterministic index shift $k \\leftarrow (j^* - c) \\bmod P$; ``None``
            draws a uniformly random window offset every step instead (multinomial HMC).
        momentum_persistence: $\\alpha$ of the partial momentum refresh
            $p \\leftarrow \\alpha p + \\sqrt{1-\\alpha^2}\\xi$ (0: full refresh).
        period: default window length P (static); fixing it here lets the kernel run inside
            ``blackjax.tempered_smc``, whose ``extend_params`` turns parameters into arrays.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=None)``.
    """
    default_period = period
    alpha = float(momentum_persistence)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"momentum_persistence must be in [0, 1), got {alpha}.")

    def kernel(
        rng_key: PRNGKey,
        state: OrbitalState,
        logdensity_fn: LogDensityFn,
        step_size: float,
        inverse_mass_matrix: Array,
        period: int | None = None,
        friction: float = 0.0,
        mask_log_cutoff: float | None = None,
        centered: bool = False,
    ) -> tuple[OrbitalState, OrbitalInfo]:
        period = default_period if period is None else int(period)
        if period is None:
            raise ValueError("period is required (as a kernel argument or in build_kernel).")
        metric, signed_step, logweight = _hamiltonian_parts(
            logdensity_fn, step_size, inverse_mass_matrix, friction
        )
        key_mom, key_idx, key_choice = jax.random.split(rng_key, 3)
        xi = metric.sample_momentum(key_mom, state.position)
        if alpha == 0.0:
            momentum = xi
        else:
            c = jnp.sqrt(1.0 - alpha**2)
            momentum = jax.tree.map(lambda p, x: alpha * p + c * x, state.momentum, xi)
        if centered:
            k = jnp.asarray(period // 2, jnp.int32)
        elif index_shift is None:
            k = jax.random.randint(key_idx, (), 0, period, jnp.int32)
        else:
            k = state.index
        z0 = integrators.IntegratorState(
            state.position, momentum, state.logdensity, state.logdensity_grad
        )
        z, j, points, logw, logp = orbital_step(
            key_choice, z0, k, signed_step, logweight, period, mask_log_cutoff
        )
        if index_shift is None or centered:
            new_index = jnp.zeros((), jnp.int32)
        else:
            new_index = jnp.mod(j - index_shift, period).astype(jnp.int32)
        new_state = OrbitalState(z.position, z.momentum, z.logdensity, z.logdensity_grad, new_index)
        divergent = jnp.any(~(logw > logw[k] - DIVERGENCE_THRESHOLD))
        info = OrbitalInfo(
            acceptance_rate=_acceptance(logw, k),
            is_accepted=j != k,
            is_divergent=divergent,
            orbit=points,
            weights=jnp.exp(logp),
            log_weights=logw,
            chosen=j,
            num_grad_evals=jnp.asarray(period - 1, jnp.int32),
        )
        return new_state, info

    return kernel


def _check(step_size, period):
    if int(period) != period or period < 1:
        raise ValueError(f"period must be a positive integer, got {period!r}.")
    if not isinstance(step_size, jax.core.Tracer) and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")


def _top_level(logdensity_fn, kernel, init_fn=init, **params) -> SamplingAlgorithm:
    def init_fn_(position: ArrayLikeTree, rng_key=None) -> OrbitalState:
        state = init_fn(position, logdensity_fn)
        if not isinstance(state.logdensity, jax.core.Tracer) and not bool(
            jnp.all(jnp.isfinite(state.logdensity))
        ):
            raise ValueError(
                "The log density is not finite at the initial position "
                f"(got {state.logdensity}); start from a point inside the support."
            )
        return state

    def step_fn(rng_key: PRNGKey, state: OrbitalState):
        return kernel(rng_key, state, logdensity_fn, **params)

    return SamplingAlgorithm(init_fn_, step_fn)


def orbital_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: Array,
    period: int,
    *,
    index_shift: int | None = None,
    momentum_persistence: float = 0.0,
) -> SamplingAlgorithm:
    """Orbital HMC: leapfrog orbits of length ``period`` with a deterministic index shift.

    Args:
        logdensity_fn: log density of the target (pytree -> scalar).
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal (1-d) or dense (2-d) inverse mass matrix.
        period: orbit window length P (P - 1 gradients per step).
        index_shift: $c$ of the shift $k \\leftarrow (j^*-c) \\bmod P$; default ``P // 2``.
        momentum_persistence: $\\alpha$ of the partial momentum refresh (0: full refresh).

    Returns:
        a ``blackjax.base.SamplingAlgorithm`` with ``.init(position)`` and ``.step(key, state)``.
    """
    _check(step_size, period)
    shift = period // 2 if index_shift is None else int(index_shift)
    kernel = build_kernel(index_shift=shift, momentum_persistence=momentum_persistence)
    return _top_level(
        logdensity_fn,
        kernel,
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        period=int(period),
    )


def multinomial_hmc(
    logdensity_fn: LogDensityFn, step_size: float, inverse_mass_matrix: Array, num_steps: int
) -> SamplingAlgorithm:
    """Multinomial HMC over a trajectory of ``num_steps`` leapfrog steps with a random offset.

    The current point sits at a uniformly random slot $k$ of the window of $L + 1$ points
    $\\{T^{j-k}(q, p)\\}$; the next state is drawn from the window with weights
    $\\propto \\exp(-H)$. Invariant for every $L$ (the offset makes the window an orbit of the
    periodic extension).

    Args:
        logdensity_fn: log density of the target.
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal or dense inverse mass matrix.
        num_steps: number of leapfrog steps L (the window has L + 1 points, L gradients).

    Returns:
        a ``blackjax.base.SamplingAlgorithm``.
    """
    _check(step_size, num_steps + 1)
    kernel = build_kernel(index_shift=None)
    return _top_level(
        logdensity_fn,
        kernel,
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        period=int(num_steps) + 1,
    )


def contracting_orbital_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: Array,
    friction: float,
    max_steps: int,
    log_cutoff: float = 20.0,
) -> SamplingAlgorithm:
    """Contracting orbital kernel: leapfrog with friction, integrated both ways.

    The map $T = D_{\\epsilon/2} L_\\epsilon D_{\\epsilon/2}$, $D_t(p) = e^{-\\gamma t} p$, has
    $\\log|\\det J_T| = -\\gamma\\epsilon d$; the orbit weights $\\pi(T^m z)|\\det J_{T^m}|$ decay in both
    directions. The window holds ``max_steps`` points each way around the current point
    (``2 * max_steps`` gradients, static shapes) and points with log weight below the maximum minus
    ``log_cutoff`` are masked out. The kernel is exact on the infinite orbit; the truncation
    leaves out at most the mass beyond the window (check ``info.log_weights`` at the ends).

    Args:
        logdensity_fn: log density of the target.
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal or dense inverse mass matrix.
        friction: $\\gamma > 0$.
        max_steps: steps each way.
        log_cutoff: relative log-weight cutoff.

    Returns:
        a ``blackjax.base.SamplingAlgorithm``.
    """
    _check(step_size, max_steps)
    if not friction > 0:
        raise ValueError(f"friction must be positive, got {friction}.")
    kernel = build_kernel(index_shift=None)
    return _top_level(
        logdensity_fn,
        kernel,
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        period=2 * int(max_steps) + 1,
        friction=float(friction),
        mask_log_cutoff=float(log_cutoff),
        centered=True,
    )


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
) -> SamplingAlgorithm:
    """Orbital kernel for any bijection $T$ that reports its log |det J|.

    Samples from the window $\\{T^{j-k} z\\}$ with weights $\\pi(T^{j-k}z)|\\det J_{T^{j-k}}(z)|$
    (eq. 7 of arXiv 2010.08047), then shifts the slot deterministically (``index_shift``) or draws
    it uniformly (``None``). ``info`` holds the whole orbit and its normalized weights.

    Args:
        logdensity_fn: log density (w.r.t. the measure that $T$'s Jacobian refers to).
        bijection: ``T(z) -> (z', log|det J_T(z)|)``.
        inverse: ``T^{-1}(z) -> (z', log|det J_{T^{-1}}(z)|)``.
        period: window length P.
        index_shift: see :func:`build_kernel`.

    Returns:
        a ``SamplingAlgorithm`` over :class:`PeriodicState`.
    """
    _check(1.0, period)

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
        z, j, points, logw, logp = orbital_step(
            key_choice, state.position, k, signed_step, logdensity_fn, period
        )
        new_index = (
            jnp.zeros((), jnp.int32)
            if index_shift is None
            else jnp.mod(j - index_shift, period).astype(jnp.int32)
        )
        info = OrbitalInfo(
            acceptance_rate=_acceptance(logw, k),
            is_accepted=j != k,
            is_divergent=jnp.any(~jnp.isfinite(logw)),
            orbit=points,
            weights=jnp.exp(logp),
            log_weights=logw,
            chosen=j,
            num_grad_evals=jnp.asarray(0, jnp.int32),
        )
        return PeriodicState(z, new_index), info

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
    return jnp.sum(w * vals, axis=0)
