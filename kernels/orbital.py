r"""Orbital MCMC (Neklyudov and Welling, "Orbital MCMC", arXiv 2010.08047).

A deterministic bijection $T$ with log-Jacobian $\log|\det J_T|$ generates orbits. On the
extended space $(z, k)$, $k \in \{0, \dots, P-1\}$, with target $\tilde\pi(z, k) = \pi(z) / P$,
the map $\tilde T(z, k) = (T z, k+1)$ for $k < P-1$ and $\tilde T(z, P-1) = (T^{-(P-1)} z, 0)$ is
periodic with period $P$. The orbit of $(z, k)$ is the window

$$ O(z, k) = \{(T^{j-k} z,\ j) : j = 0, \dots, P-1\}, $$

and $\tilde\pi$ restricted to the orbit has the weights

$$ w_j \propto \pi(T^{j-k} z)\,|\det J_{T^{j-k}}(z)| \qquad \text{(paper, Sec. 3)}. $$

Any kernel on the $P$ orbit points that keeps $w$ invariant keeps $\tilde\pi$ invariant, for any
$T$ (periodic or not). Two are offered:

* independent sampling $j^* \sim w$ (``rotation=None``, the paper's choice);
* the *weight rotation* $r \in (0, 1)$: lay the weights on a circle of circumference 1 in slot
  order (slot $j$ owns the arc $[W_j, W_{j+1})$, $W_j = \sum_{i<j} w_i$), draw $u$ uniformly on
  the current slot's arc and move to the slot that owns $u + r \bmod 1$. A rotation preserves
  the uniform measure on the circle, so $w$ is invariant; the transition probabilities are
  $Q_{kj} = |(\mathrm{arc}_k + r) \cap \mathrm{arc}_j| / w_k$. With equal weights and $r = 1/2$
  the chain always moves $P/2$ points away along the trajectory (a fixed integration time, as
  HMC, instead of the triangular spread of $|j^* - k|$ under independent sampling).

The choice is followed by a map that keeps $\tilde\pi$ invariant and moves between orbits:

* a deterministic index shift $k \leftarrow (j^* - c) \bmod P$ (a permutation of $k$, so
  invariant; it makes the chain irreversible), or
* a uniformly random window offset $k \sim U\{0..P-1\}$ drawn fresh every step, which is
  multinomial HMC over the whole trajectory and is invariant for every length $P$
  (BlackJAX's ``mhmc`` always puts the current point first, which is biased for $P > 1$).

For HMC, $z = (q, p)$, $T$ is one leapfrog step (volume preserving), $\pi(z) \propto
\exp(\log p(q) - K(p))$, and the momentum is partially refreshed between iterations,
$p \leftarrow \alpha p + \sqrt{1-\alpha^2}\,\xi$, $\xi \sim N(0, M)$.

All weights are computed in log space and normalized with ``logsumexp``: a log density offset
by $-10^4$ in float32 works (BlackJAX's ``orbital_hmc`` exponentiates unnormalized weights and
returns NaN there).

The window is grown by one ``lax.while_loop`` that extends either its backward or its forward
end, one map application per iteration, so a window of $n$ points costs exactly $n - 1$
applications (gradient evaluations for HMC). Its length can be a traced value $n \le P$
(``num_points``: a trajectory length fixed in time while the step size adapts); the unused
slots get weight 0.

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
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc import integrators, metrics

from kernels._deprecation import renamed
from kernels.involutive._api import check_mass_matrix, check_position
from kernels.types import Array, ArrayLikeTree, ArrayTree, LogDensityFn, PRNGKey

__all__ = [
    "OrbitalState",
    "OrbitalInfo",
    "PeriodicState",
    "orbit_window",
    "contracting_window",
    "choose",
    "orbit_info",
    "orbital_step",
    "init",
    "build_kernel",
    "build_contracting_kernel",
    "orbital_hmc",
    "multinomial_hmc",
    "build_multinomial_kernel",
    "build_orbital_kernel",
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
    """(metric, signed_step, logweight) for leapfrog, with friction $D_{\\epsilon/2} L D_{\\epsilon/2}$."""
    metric = metrics.default_metric(inverse_mass_matrix)
    integrator = integrators.velocity_verlet(logdensity_fn, metric.kinetic_energy)
    # static test; a traced friction (per-particle parameters in SMC) always takes the damped path
    damped = isinstance(friction, jax.core.Tracer) or bool(friction)

    def signed_step(z, d):
        eps = d * step_size
        if damped:
            damp = jnp.exp(-0.5 * friction * eps)
            z = z._replace(momentum=jax.tree.map(lambda p: damp * p, z.momentum))
        z = integrator(z, eps)
        logdet = jnp.zeros((), jnp.result_type(float))
        if damped:
            z = z._replace(momentum=jax.tree.map(lambda p: damp * p, z.momentum))
            dim = sum(x.size for x in jax.tree.leaves(z.momentum))
            logdet = -friction * eps * dim
        return z, logdet

    def logweight(z):
        return z.logdensity - metric.kinetic_energy(z.momentum)

    return metric, signed_step, logweight


def _refresh(key, state, metric, alpha):
    xi = metric.sample_momentum(key, state.position)
    if alpha == 0.0:
        return xi
    c = jnp.sqrt(1.0 - alpha**2)
    return jax.tree.map(lambda p, x: alpha * p + c * x, state.momentum, xi)


def _check_rotation(rotation):
    if rotation is not None and not 0.0 < float(rotation) < 1.0:
        raise ValueError(
            f"rotation must lie in (0, 1) (or be None for independent sampling), got {rotation!r}."
        )
    return None if rotation is None else float(rotation)


def build_kernel(
    index_shift: int | None = None,
    alpha: float | None = None,
    period: int | None = None,
    rotation: float | None = None,
    *,
    momentum_persistence: float | None = None,
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the orbital HMC transition (BlackJAX ``build_kernel`` contract).

    Args:
        index_shift: $c$ in the deterministic index shift $k \\leftarrow (j^* - c) \\bmod n$; ``None``
            draws a uniformly random window offset every step instead (multinomial HMC).
        alpha: momentum persistence $\\alpha$ of the partial momentum refresh
            $p \\leftarrow \\alpha p + \\sqrt{1-\\alpha^2}\\xi$ (0: full refresh; BlackJAX's
            ``ghmc`` and ``kernels.involutive`` call it ``alpha`` too).
        momentum_persistence: deprecated name of ``alpha``.
        period: default number of slots P (static); fixing it here lets the kernel run inside
            ``blackjax.tempered_smc``, whose ``extend_params`` turns parameters into arrays.
        rotation: orbit choice, see :func:`choose` (None: independent sampling).

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=None,
        num_points=None)``; ``num_points`` (may be traced, at most ``period``) shortens the
        window.
    """
    default_period = period
    alpha = float(
        renamed("alpha", alpha, "momentum_persistence", momentum_persistence, 0.0, "build_kernel")
    )
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha (momentum persistence) must be in [0, 1), got {alpha}.")
    rotation = _check_rotation(rotation)

    def kernel(
        rng_key: PRNGKey,
        state: OrbitalState,
        logdensity_fn: LogDensityFn,
        step_size: float,
        inverse_mass_matrix: Array,
        period: int | None = None,
        num_points: Array | int | None = None,
    ) -> tuple[OrbitalState, OrbitalInfo]:
        period = default_period if period is None else int(period)
        if period is None:
            raise ValueError("period is required (as a kernel argument or in build_kernel).")
        n = jnp.asarray(period if num_points is None else num_points, jnp.int32)
        metric, signed_step, logweight = _hamiltonian_parts(
            logdensity_fn, step_size, inverse_mass_matrix
        )
        key_mom, key_idx, key_choice = jax.random.split(rng_key, 3)
        momentum = _refresh(key_mom, state, metric, alpha)
        if index_shift is None:
            k = jax.random.randint(key_idx, (), 0, n, jnp.int32)
        else:
            k = jnp.minimum(state.index, n - 1)
        z0 = integrators.IntegratorState(
            state.position, momentum, state.logdensity, state.logdensity_grad
        )
        z, j, points, logw, trans = orbital_step(
            key_choice, z0, k, signed_step, logweight, period, rotation, n
        )
        if index_shift is None:
            new_index = jnp.zeros((), jnp.int32)
        else:
            new_index = jnp.mod(j - index_shift, n).astype(jnp.int32)
        new_state = OrbitalState(z.position, z.momentum, z.logdensity, z.logdensity_grad, new_index)
        valid = jnp.arange(period) < n
        return new_state, orbit_info(logw, k, j, trans, points, n - 1, valid)

    return kernel


def build_contracting_kernel(
    max_steps: int | None = None, log_cutoff: float = 20.0, rotation: float | None = None
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the contracting orbital transition (leapfrog with friction, both ways).

    Args:
        max_steps: at most this many leapfrog steps each way (static; or pass it to the
            kernel).
        log_cutoff: stop a direction once its log weight is below the running maximum minus
            this, and drop the points below the final maximum minus this.
        rotation: orbit choice, see :func:`choose`.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, friction,
        max_steps=None)``.
    """
    rotation = _check_rotation(rotation)
    default_max_steps = max_steps

    def kernel(
        rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, friction, max_steps=None
    ):
        max_steps = default_max_steps if max_steps is None else int(max_steps)
        if max_steps is None:
            raise ValueError("max_steps is required (as a kernel argument or in build_kernel).")
        metric, signed_step, logweight = _hamiltonian_parts(
            logdensity_fn, step_size, inverse_mass_matrix, friction
        )
        key_mom, key_choice = jax.random.split(rng_key)
        momentum = metric.sample_momentum(key_mom, state.position)
        z0 = integrators.IntegratorState(
            state.position, momentum, state.logdensity, state.logdensity_grad
        )
        points, logw, num_steps = contracting_window(
            z0, signed_step, logweight, max_steps, log_cutoff
        )
        j, trans = choose(key_choice, logw, max_steps, rotation)
        z = jax.tree.map(lambda x: x[j], points)
        new_state = OrbitalState(
            z.position, z.momentum, z.logdensity, z.logdensity_grad, jnp.zeros((), jnp.int32)
        )
        info = orbit_info(logw, max_steps, j, trans, points, num_steps, jnp.isfinite(logw))
        return new_state, info

    return kernel


def build_orbital_kernel(
    period: int | None = None,
    index_shift: int | None = None,
    alpha: float | None = None,
    rotation: float | None = None,
    *,
    momentum_persistence: float | None = None,
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the orbital HMC transition of :func:`orbital_hmc` (``index_shift`` ``P // 2``).

    Args:
        period: default window length P (static; or pass it to the kernel).
        index_shift: $c$ of the index shift; default ``P // 2``.
        alpha: momentum persistence $\\alpha$ of the partial momentum refresh.
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        momentum_persistence: deprecated name of ``alpha``.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=None,
        num_points=None)``.
    """
    alpha = renamed(
        "alpha", alpha, "momentum_persistence", momentum_persistence, 0.0, "build_orbital_kernel"
    )
    build_kernel(0, alpha, period, rotation)  # checks the arguments
    default_period = period

    def kernel(
        rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=None, num_points=None
    ):
        period = default_period if period is None else int(period)
        if period is None:
            raise ValueError("period is required (as a kernel argument or in build_kernel).")
        shift = period // 2 if index_shift is None else int(index_shift)
        inner = build_kernel(shift, alpha, period, rotation)
        return inner(
            rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, None, num_points
        )

    return kernel


def build_multinomial_kernel(
    num_integration_steps: int | None = None,
    rotation: float | None = None,
    *,
    num_steps: int | None = None,
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the multinomial HMC transition (BlackJAX ``build_kernel`` contract).

    Args:
        num_integration_steps: default number of leapfrog steps $L$ (static; window of $L + 1$
            points; BlackJAX's name).
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        num_steps: deprecated name of ``num_integration_steps``.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix,
        num_integration_steps=None)``.
    """
    kernel = build_kernel(index_shift=None, rotation=rotation)
    default_steps = renamed(
        "num_integration_steps",
        num_integration_steps,
        "num_steps",
        num_steps,
        None,
        "build_multinomial_kernel",
    )

    def multinomial_kernel(
        rng_key,
        state,
        logdensity_fn,
        step_size,
        inverse_mass_matrix,
        num_integration_steps=None,
        num_steps=None,
    ):
        steps = renamed(
            "num_integration_steps",
            num_integration_steps,
            "num_steps",
            num_steps,
            default_steps,
            "multinomial_kernel",
        )
        if steps is None:
            raise ValueError(
                "num_integration_steps is required (as a kernel argument or in build_kernel)."
            )
        return kernel(
            rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=int(steps) + 1
        )

    return multinomial_kernel


def _check(step_size, period):
    if int(period) != period or period < 1:
        raise ValueError(f"period must be a positive integer, got {period!r}.")
    if not isinstance(step_size, jax.core.Tracer) and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")


def _top_level(logdensity_fn, kernel, inverse_mass_matrix, **params) -> SamplingAlgorithm:
    def init_fn(position: ArrayLikeTree, rng_key=None) -> OrbitalState:
        del rng_key
        check_position(position)
        check_mass_matrix(position, inverse_mass_matrix)
        state = init(position, logdensity_fn)
        if not isinstance(state.logdensity, jax.core.Tracer) and not bool(
            jnp.all(jnp.isfinite(state.logdensity))
        ):
            raise ValueError(
                "The log density is not finite at the initial position "
                f"(got {state.logdensity}); start from a point inside the support."
            )
        return state

    def step_fn(rng_key: PRNGKey, state: OrbitalState):
        return kernel(
            rng_key, state, logdensity_fn, inverse_mass_matrix=inverse_mass_matrix, **params
        )

    return SamplingAlgorithm(init_fn, step_fn)


def orbital_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: Array,
    period: int,
    *,
    index_shift: int | None = None,
    alpha: float | None = None,
    rotation: float | None = None,
    num_points: Array | int | None = None,
    momentum_persistence: float | None = None,
) -> SamplingAlgorithm:
    """Orbital HMC: leapfrog orbits of ``period`` points with a deterministic index shift.

    Args:
        logdensity_fn: log density of the target (pytree -> scalar).
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal (1-d) or dense (2-d) inverse mass matrix.
        period: orbit window length P (P - 1 gradients per step).
        index_shift: $c$ of the shift $k \\leftarrow (j^*-c) \\bmod P$; default ``P // 2``.
        alpha: momentum persistence $\\alpha$ of the partial momentum refresh (0: full refresh).
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        num_points: use only the first $n \\le P$ slots (may be traced).
        momentum_persistence: deprecated name of ``alpha``.

    Returns:
        a ``blackjax.base.SamplingAlgorithm`` with ``.init(position)`` and ``.step(key, state)``.
    """
    _check(step_size, period)
    shift = period // 2 if index_shift is None else int(index_shift)
    alpha = renamed(
        "alpha", alpha, "momentum_persistence", momentum_persistence, 0.0, "orbital_hmc"
    )
    kernel = build_kernel(index_shift=shift, alpha=alpha, rotation=rotation)
    return _top_level(
        logdensity_fn,
        kernel,
        inverse_mass_matrix,
        step_size=step_size,
        period=int(period),
        num_points=num_points,
    )


def multinomial_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: Array,
    num_integration_steps: int | None = None,
    *,
    rotation: float | None = None,
    num_steps: int | None = None,
) -> SamplingAlgorithm:
    """Multinomial HMC over a trajectory of ``num_integration_steps`` leapfrog steps with a
    random offset.

    The current point sits at a uniformly random slot $k$ of the window of $L + 1$ points
    $\\{T^{j-k}(q, p)\\}$; the next state is drawn from the window with weights
    $\\propto \\exp(-H)$. Invariant for every $L$ (the offset makes the window an orbit of the
    periodic extension).

    Args:
        logdensity_fn: log density of the target.
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal or dense inverse mass matrix.
        num_integration_steps: number of leapfrog steps L (the window has L + 1 points, L
            gradients; BlackJAX's name).
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        num_steps: deprecated name of ``num_integration_steps``.

    Returns:
        a ``blackjax.base.SamplingAlgorithm``.
    """
    steps = renamed(
        "num_integration_steps",
        num_integration_steps,
        "num_steps",
        num_steps,
        None,
        "multinomial_hmc",
    )
    if steps is None:
        raise TypeError("multinomial_hmc: num_integration_steps is required.")
    _check(step_size, steps + 1)
    kernel = build_multinomial_kernel(int(steps), rotation=rotation)
    return _top_level(logdensity_fn, kernel, inverse_mass_matrix, step_size=step_size)


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
    $\\log|\\det J_T| = -\\gamma\\epsilon d$; along the orbit the weights
    $\\pi(T^m z)|\\det J_{T^m}|$ decay both ways (energy dissipates forward and the volume
    shrinks; backward the energy grows). Each direction is integrated until its log weight falls
    below the running maximum minus ``log_cutoff`` (at most ``max_steps``), and the points below
    the final maximum minus ``log_cutoff`` are dropped, so the kept set does not depend on where
    the orbit was entered when the weights are unimodal along it. The kernel is exact on the
    infinite orbit; the truncation moves at most the orbit mass below the cutoff (a fraction of
    order $e^{-\\text{cutoff}}$) per step. ``info.num_grad_evals`` counts the steps taken.

    Args:
        logdensity_fn: log density of the target.
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal or dense inverse mass matrix.
        friction: $\\gamma > 0$.
        max_steps: at most this many steps each way (the window has ``2 * max_steps + 1`` slots).
        log_cutoff: relative log-weight cutoff.

    Returns:
        a ``blackjax.base.SamplingAlgorithm``.
    """
    _check(step_size, max_steps)
    if not friction > 0:
        raise ValueError(f"friction must be positive, got {friction}.")
    if not log_cutoff > 0:
        raise ValueError(f"log_cutoff must be positive, got {log_cutoff}.")
    kernel = build_contracting_kernel(int(max_steps), float(log_cutoff))
    return _top_level(
        logdensity_fn, kernel, inverse_mass_matrix, step_size=step_size, friction=float(friction)
    )


def _api(top_level, build) -> GenerateSamplingAPI:
    api = GenerateSamplingAPI(top_level, init, build)
    api.__doc__ = top_level.__doc__
    return api


# BlackJAX's top-level API: call for a SamplingAlgorithm; ``.init(position, logdensity_fn)`` and
# ``.build_kernel(...)`` for blackjax.tempered_smc and kernels.smc.tempering (the static sizes
# (period, num_steps, max_steps) go to build_kernel or to the kernel call).
orbital_hmc = _api(orbital_hmc, build_orbital_kernel)
multinomial_hmc = _api(multinomial_hmc, build_multinomial_kernel)
contracting_orbital_hmc = _api(contracting_orbital_hmc, build_contracting_kernel)


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
