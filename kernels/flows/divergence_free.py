r"""Divergence-free flow samplers (Neklyudov, Bondesan, Welling, arXiv 2106.10188, Sec. 3).

A velocity field $v$ on the state space leaves the density $p$ invariant iff the continuity
equation is stationary,

$$ \mathrm{div}(p\,v) = p\,(\mathrm{div}\,v + v \cdot \nabla \log p) = 0 . $$

Examples: Hamiltonian fields $v = J \nabla \log p$ ($J$ constant antisymmetric; HMC on
$z = (q, p)$), and deterministic Gibbs $v_i = c_i / p(x_i \mid x_{-i})$
(:mod:`kernels.flows.continuous_gibbs`). The sampler integrates $\dot z = v(z)$ with a
*splitting*: $v = \sum_b v_b$, each component integrated exactly by a sub-flow
$\varphi_b(z, t) \mapsto (z', \log|\det \partial z'/\partial z|)$ with
$\varphi_b(\cdot, -t) = \varphi_b(\cdot, t)^{-1}$, composed symmetrically (Strang),

$$ T_h = \varphi_1^{h/2} \circ \dots \circ \varphi_{m-1}^{h/2} \circ \varphi_m^{h}
   \circ \varphi_{m-1}^{h/2} \circ \dots \circ \varphi_1^{h/2}, \qquad T_{-h} = T_h^{-1}. $$

Two kinds of sub-flows:

* *shears* (:func:`shear`): block $b$ moves with a velocity that does not depend on block $b$,
  $z_b \leftarrow z_b + t\,v_b(z_{-b})$; volume preserving, exactly invertible. Leapfrog is
  the split of the Hamiltonian field into its momentum and position shears;
* *exact $p$-preserving flows* ($\mathrm{div}(p v_b) = 0$): $p(\varphi_b z)\,|\det J| = p(z)$
  exactly, e.g. the conditional-quantile rotations of deterministic Gibbs.

The composed map $T_h$ need not preserve $p$ exactly (the shears of a Hamiltonian field change
the energy by $O(h^2)$): :func:`divergence_free_flow` corrects it exactly with the orbital
kernel (:mod:`kernels.orbital`): the window of $L + 1$ points $T_h^{j-k} z$ around the current
point (uniformly random slot $k$) is weighted by $p(T_h^{j-k} z)\,|\det J_{T_h^{j-k}}(z)|$ and a
point is chosen by those weights. Between windows a $p$-preserving random map (``refresh_fn``,
e.g. a momentum refresh) makes the chain ergodic. With the Hamiltonian field
(:func:`hamiltonian_flow`) this is exactly :func:`kernels.orbital.multinomial_hmc`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc import metrics
from jax.flatten_util import ravel_pytree

import kernels.orbital as orbital
from kernels.types import Array, ArrayLikeTree, ArrayTree, LogDensityFn, PRNGKey

__all__ = [
    "SubFlow",
    "FlowState",
    "HamiltonianFlow",
    "shear",
    "flow_map",
    "divergence",
    "hamiltonian_flow",
    "divergence_free_flow",
]

SubFlow = Callable[[ArrayTree, Array], tuple[ArrayTree, Array]]
"""``(z, t) -> (z', log|det dz'/dz|)``: the exact flow of one component field for time ``t``."""


class FlowState(NamedTuple):
    """State of :func:`divergence_free_flow`.

    Attributes:
        position: the (extended) state $z$, a pytree.
        logdensity: $\\log p(z)$.
    """

    position: ArrayTree
    logdensity: Array


class HamiltonianFlow(NamedTuple):
    """The Hamiltonian field on $z = $ ``{"position": q, "momentum": p}``.

    Attributes:
        logdensity_fn: $\\log p(z) = \\log \\pi(q) - \\tfrac12 p^\\top M^{-1} p$.
        sub_flows: the momentum shear $p \\leftarrow p + t \\nabla \\log \\pi(q)$ and the
            position shear $q \\leftarrow q + t M^{-1} p$ (Strang: leapfrog).
        refresh_fn: ``(key, z) -> z`` with a fresh momentum $p \\sim N(0, M)$.
        velocity_fn: $v(z) = (M^{-1} p, \\nabla \\log \\pi(q))$ as a dict like $z$.
        init: ``q -> z`` with zero momentum.
    """

    logdensity_fn: LogDensityFn
    sub_flows: tuple[SubFlow, ...]
    refresh_fn: Callable[[PRNGKey, ArrayTree], ArrayTree]
    velocity_fn: Callable[[ArrayTree], ArrayTree]
    init: Callable[[ArrayLikeTree], ArrayTree]


def _get(z, block):
    if isinstance(block, str) and hasattr(z, "_fields"):
        return getattr(z, block)
    return z[block]


def _set(z, block, value):
    if isinstance(z, jax.Array):  # a vector state; blocks are indices or slices
        return z.at[block].set(value)
    if isinstance(z, dict):
        return {**z, block: value}
    if hasattr(z, "_replace"):  # NamedTuple
        name = z._fields[block] if isinstance(block, int) else block
        return z._replace(**{name: value})
    out = list(z)
    out[block] = value
    return type(z)(out)


def shear(block: Any, velocity_fn: Callable[[ArrayTree], ArrayTree]) -> SubFlow:
    """Sub-flow of a shear field: block ``block`` moves at ``velocity_fn(z)``, the rest is fixed.

    $z_b \\leftarrow z_b + t\\,v_b(z)$, exact when $v_b$ does not depend on $z_b$ (then the field
    is divergence free and the map volume preserving: log-determinant 0).

    Args:
        block: key (dict), index (tuple/list), field name (NamedTuple), or index or slice of a
            vector state, of the moving block.
        velocity_fn: $v_b(z)$, a pytree like ``z[block]``; must not depend on ``z[block]``.

    Returns:
        The sub-flow ``(z, t) -> (z', 0)``.
    """

    def sub_flow(z, t):
        v = velocity_fn(z)
        moved = jax.tree.map(lambda x, dx: x + t * dx, _get(z, block), v)
        return _set(z, block, moved), jnp.zeros((), jnp.result_type(float))

    return sub_flow


def flow_map(
    sub_flows: Sequence[SubFlow], step_size: float
) -> Callable[[ArrayTree, Array], tuple[ArrayTree, Array]]:
    """The symmetric (Strang) composition $T_h$ of the sub-flows, for the orbital machinery.

    Args:
        sub_flows: $\\varphi_1, \\dots, \\varphi_m$ (half steps of $\\varphi_1..\\varphi_{m-1}$
            around a full step of $\\varphi_m$).
        step_size: $h$.

    Returns:
        ``signed_step(z, d) -> (z', logdet)`` applying $T_{d h}$ ($d = \\pm 1$; $T_{-h} = T_h^{-1}$)
        and returning $\\log|\\det J|$ of the map applied.
    """
    sub_flows = tuple(sub_flows)
    if not sub_flows:
        raise ValueError("flow_map needs at least one sub-flow.")
    order = sub_flows[:-1]

    def signed_step(z, d):
        h = d * step_size
        total = jnp.zeros((), jnp.result_type(float))
        for phi in order:
            z, ld = phi(z, h * 0.5)
            total = total + ld
        z, ld = sub_flows[-1](z, h)
        total = total + ld
        for phi in reversed(order):
            z, ld = phi(z, h * 0.5)
            total = total + ld
        return z, total

    return signed_step


def divergence(logdensity_fn: LogDensityFn, velocity_fn: Callable, z: ArrayLikeTree) -> Array:
    """$\\mathrm{div}(p v) / p = \\mathrm{div}\\,v + v \\cdot \\nabla \\log p$ at ``z`` (0 for a
    field that preserves $p$), by forward-mode autodiff on the flattened state.

    Args:
        logdensity_fn: $\\log p$.
        velocity_fn: $v(z)$, a pytree like ``z``.
        z: the point.

    Returns:
        The scalar $\\mathrm{div}(p v)/p$.
    """
    flat, unravel = ravel_pytree(z)

    def v_flat(x):
        return ravel_pytree(velocity_fn(unravel(x)))[0]

    div_v = jnp.trace(jax.jacfwd(v_flat)(flat))
    grad = ravel_pytree(jax.grad(logdensity_fn)(z))[0]
    return div_v + jnp.dot(v_flat(flat), grad)


def hamiltonian_flow(logdensity_fn: LogDensityFn, inverse_mass_matrix: Array) -> HamiltonianFlow:
    """HMC's field as a divergence-free flow: $z = (q, p)$, $v = (M^{-1}p, \\nabla\\log\\pi(q))$.

    Args:
        logdensity_fn: $\\log \\pi(q)$.
        inverse_mass_matrix: $M^{-1}$, ``(d,)`` or ``(d, d)`` in ``ravel_pytree`` order.

    Returns:
        A :class:`HamiltonianFlow` (its split is leapfrog; momentum half steps outside).
    """
    metric = metrics.default_metric(inverse_mass_matrix)
    kinetic_grad = jax.grad(metric.kinetic_energy)

    def joint(z):
        return logdensity_fn(z["position"]) - metric.kinetic_energy(z["momentum"])

    def dq(z):
        return kinetic_grad(z["momentum"])

    def dp(z):
        return jax.grad(logdensity_fn)(z["position"])

    def refresh(key, z):
        return {**z, "momentum": metric.sample_momentum(key, z["position"])}

    def velocity(z):
        return {"position": dq(z), "momentum": dp(z)}

    def init(q):
        return {"position": q, "momentum": jax.tree.map(jnp.zeros_like, q)}

    return HamiltonianFlow(
        joint, (shear("momentum", dp), shear("position", dq)), refresh, velocity, init
    )


def divergence_free_flow(
    logdensity_fn: LogDensityFn,
    sub_flows: Sequence[SubFlow],
    step_size: float,
    num_steps: int,
    refresh_fn: Callable[[PRNGKey, ArrayTree], ArrayTree] | None = None,
    rotation: float | None = None,
) -> SamplingAlgorithm:
    """Sampler for a split divergence-free flow, corrected exactly by orbit weights.

    Each step: ``z = refresh_fn(key, z)`` (a $p$-preserving random map, optional), then the
    window of ``num_steps + 1`` points $\\{T_h^{j-k} z\\}$ with $k$ uniform, weights
    $p(T_h^{j-k} z)|\\det J|$ (log space), and a draw from the window
    (:func:`kernels.orbital.choose`). ``info`` is a :class:`kernels.orbital.OrbitalInfo`
    (orbit, normalized weights, ``num_grad_evals`` = map applications).

    Args:
        logdensity_fn: $\\log p(z)$ of the (extended) state.
        sub_flows: the split of the field, see :func:`flow_map`.
        step_size: $h$.
        num_steps: $L$ map applications per window.
        refresh_fn: ``(key, z) -> z`` keeping $p$ invariant (e.g. a momentum refresh).
        rotation: orbit choice, see :func:`kernels.orbital.choose`.

    Returns:
        A ``SamplingAlgorithm`` over :class:`FlowState`.
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if not isinstance(step_size, jax.core.Tracer) and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")
    signed_step = flow_map(sub_flows, step_size)
    period = int(num_steps) + 1

    def init(position: ArrayLikeTree, rng_key=None) -> FlowState:
        logdensity = logdensity_fn(position)
        if not isinstance(logdensity, jax.core.Tracer) and not bool(jnp.isfinite(logdensity)):
            raise ValueError(
                f"log p is not finite at the initial state (got {logdensity}); start inside the "
                "support."
            )
        return FlowState(position, logdensity)

    def step(rng_key: PRNGKey, state: FlowState) -> tuple[FlowState, orbital.OrbitalInfo]:
        key_refresh, key_idx, key_choice = jax.random.split(rng_key, 3)
        z = state.position if refresh_fn is None else refresh_fn(key_refresh, state.position)
        k = jax.random.randint(key_idx, (), 0, period, jnp.int32)
        new, j, points, logw, trans = orbital.orbital_step(
            key_choice, z, k, signed_step, logdensity_fn, period, rotation
        )
        info = orbital.orbit_info(logw, k, j, trans, points, period - 1)
        return FlowState(new, logdensity_fn(new)), info

    return SamplingAlgorithm(init, step)
