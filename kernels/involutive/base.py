r"""The generic involutive MCMC kernel (Neklyudov, Welling, Egorov, Vetrov, ICML 2020, arXiv 2006.16653).

Target $p(x)$, auxiliary distribution $p(v \mid x)$ and an involution
$f(x, v) = (x', v')$ with $f(f(x, v)) = (x, v)$. One step (Algorithm 1 of the paper):

1. sample $v \sim p(v \mid x)$;
2. propose $(x', v') = f(x, v)$;
3. accept $x'$ with probability (paper, Eq. 4)

$$
\min\Big\{1, \frac{p(x')\, p(v' \mid x')}{p(x)\, p(v \mid x)}
\big|\det \tfrac{\partial f}{\partial (x, v)}\big|\Big\}.
$$

The chain leaves $p(x)p(v \mid x)$ invariant, hence $p(x)$ after marginalising $v$.

The composable unit is a :class:`Move` (auxiliary sampler, auxiliary log density and involution,
acting on :class:`InvolutiveState`); :mod:`kernels.involutive.combinators` maps moves to moves and
:func:`step` turns any move into a Metropolis-Hastings transition. A proposal whose log density or
log-Jacobian is NaN or infinite is rejected.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax.flatten_util import ravel_pytree

from kernels.types import Array, ArrayLikeTree, ArrayTree, LogDensityFn, PRNGKey

__all__ = [
    "InvolutiveState",
    "InvolutiveInfo",
    "Move",
    "init",
    "build_kernel",
    "step",
    "transition",
    "accept_reject",
    "from_involution",
    "log_abs_det_jacobian",
    "check_involution",
    "imcmc",
]


class InvolutiveState(NamedTuple):
    """State of an involutive chain.

    Attributes:
        position: current position $x$ (a pytree).
        logdensity: $\\log p(x)$ (scalar), cached.
        logdensity_grad: $\\nabla \\log p(x)$ (same pytree as ``position``), cached for
            gradient-based moves; ``None`` for gradient-free ones.
        aux: the move's persistent auxiliary state, a pytree laid out by the move itself
            (``move.init_aux``): ``None`` for the built-ins; each combinator owns one slot
            and hands every inner move a state whose ``aux`` is that move's own slot
            (:mod:`kernels.involutive.combinators`), so nestings never share a slot.
    """

    position: ArrayTree
    logdensity: Array
    logdensity_grad: ArrayTree | None = None
    aux: Any = None


class InvolutiveInfo(NamedTuple):
    """Information on one transition.

    Attributes:
        acceptance_rate: $\\min(1, \\text{ratio})$ of the Metropolis-Hastings test.
        is_accepted: whether the proposal was accepted.
        is_divergent: whether $-\\log\\text{ratio}$ exceeded the divergence threshold or
            the proposal was non-finite.
        log_accept_ratio: $\\log$ of the acceptance ratio (``-inf`` for non-finite proposals).
        num_grad_evals: gradient evaluations spent by the involution in this step.
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    log_accept_ratio: Array
    num_grad_evals: Array


def _no_grad_evals(aux):
    del aux
    return jnp.asarray(0, jnp.int32)


def _keep_state(state, aux):
    del aux
    return state


def _no_aux(state):
    del state
    return None


class Move(NamedTuple):
    """An involutive move: the composable unit of this package.

    Attributes:
        sample_aux: ``(rng_key, state) -> v``, draws $v \\sim p(v \\mid x)$ (or any kernel
            leaving $p(v \\mid x)$ invariant, given the persistent ``state.aux``).
        aux_logdensity: ``(v, state) -> scalar``, $\\log p(v \\mid x)$ up to a constant that
            does not depend on $x$.
        involution: ``(state, v) -> (state', v', log_abs_det)``: applies $f$, returns the
            new state with ``logdensity`` (and ``logdensity_grad`` when tracked) evaluated at
            $x'$, and $\\log|\\det J_f(x, v)|$.
        finalize: ``(state, v) -> state``, deterministic update after the accept/reject test
            (e.g. flip and store a direction); identity by default.
        init_aux: ``state -> aux``, initial persistent auxiliary variable; ``None`` by default.
        grad_evals: ``v -> int``, gradient evaluations of one involution call.
        refresh: ``(rng_key, state, previous_v, alpha, flip) -> v``, a kernel leaving
            $p(v \\mid x)$ invariant that keeps part of ``flip(previous_v)`` (used by
            :func:`~kernels.involutive.partial_refresh`); ``None``: the autoregressive
            $\\alpha\\,\\mathrm{flip}(v_{\\mathrm{prev}}) + \\sqrt{1-\\alpha^2}\\,\\varepsilon$ on the
            whole of $v$ (a zero-mean Gaussian $p(v)$ independent of $x$).

    Contract: ``involution`` returns a state whose ``aux`` is the input's (the persistent
    state changes only in ``finalize``).
    """

    sample_aux: Callable[[PRNGKey, InvolutiveState], ArrayTree]
    aux_logdensity: Callable[[ArrayTree, InvolutiveState], Array]
    involution: Callable[[InvolutiveState, ArrayTree], tuple[InvolutiveState, ArrayTree, Array]]
    finalize: Callable[[InvolutiveState, ArrayTree], InvolutiveState] = _keep_state
    init_aux: Callable[[InvolutiveState], Any] = _no_aux
    grad_evals: Callable[[ArrayTree], Array] = _no_grad_evals
    refresh: Callable | None = None


# ----------------------------------------------------------------------------------- init
def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_logdensity(logdensity: Array, where: str = "the initial position") -> None:
    """Raise a ValueError if a concrete log density is not a finite scalar (no-op under jit).

    Args:
        logdensity: value returned by the log density function.
        where: description of the point, used in the message.
    """
    if jnp.ndim(logdensity) != 0:
        raise ValueError(
            f"logdensity_fn must return a scalar, got shape {jnp.shape(logdensity)} at {where}; "
            "sum the log density over the data (and over vectorised chains use jax.vmap)."
        )
    if _is_concrete(logdensity) and not np.isfinite(np.asarray(logdensity)):
        raise ValueError(
            f"The log density at {where} is {float(logdensity)} (not finite). Start the chain "
            "at a point of positive density (e.g. inside the support of the constrained sites)."
        )


def evaluate(
    logdensity_fn: LogDensityFn, position: ArrayLikeTree, with_grad: bool
) -> tuple[Array, ArrayTree | None]:
    """Return ``(logdensity, logdensity_grad or None)`` at ``position``."""
    if with_grad:
        return jax.value_and_grad(logdensity_fn)(position)
    return logdensity_fn(position), None


def init(
    position: ArrayLikeTree,
    logdensity_fn: LogDensityFn,
    move: Move | None = None,
    *,
    with_grad: bool = False,
) -> InvolutiveState:
    """Initial state of an involutive chain.

    Args:
        position: initial position (pytree of arrays).
        logdensity_fn: $\\log p(x)$ up to a constant, returns a scalar.
        move: the move that will be run; provides the initial persistent auxiliary variable.
        with_grad: cache $\\nabla \\log p(x)$ in the state (gradient-based moves).

    Returns:
        The state. Raises ValueError when the log density at ``position`` is concrete and not
        a finite scalar.
    """
    position = jax.tree.map(jnp.asarray, position)
    logdensity, grad = evaluate(logdensity_fn, position, with_grad)
    check_logdensity(logdensity)
    state = InvolutiveState(position, logdensity, grad, None)
    if move is not None:
        state = state._replace(aux=move.init_aux(state))
    return state


# ------------------------------------------------------------------------------- the step
def transition(
    move: Move, state: InvolutiveState, v: ArrayTree
) -> tuple[InvolutiveState, ArrayTree, Array]:
    """Deterministic part of a step: the proposal and its log acceptance ratio.

    Args:
        move: the involutive move.
        state: current state $x$.
        v: auxiliary variable $v$.

    Returns:
        ``(proposal, v', log_ratio)`` where ``log_ratio`` is
        $\\log p(x') + \\log p(v' \\mid x') - \\log p(x) - \\log p(v \\mid x) + \\log|\\det J_f|$,
        replaced by ``-inf`` when the proposal's log density, the log-Jacobian or the ratio is
        NaN or infinite (such proposals are never accepted).
    """
    proposal, v_new, log_abs_det = move.involution(state, v)
    log_ratio = (
        proposal.logdensity
        + move.aux_logdensity(v_new, proposal)
        - state.logdensity
        - move.aux_logdensity(v, state)
        + log_abs_det
    )
    ok = jnp.isfinite(proposal.logdensity) & jnp.isfinite(log_abs_det) & ~jnp.isnan(log_ratio)
    log_ratio = jnp.where(ok, log_ratio, -jnp.inf)
    return proposal, v_new, log_ratio


def accept_reject(
    move: Move,
    state: InvolutiveState,
    v: ArrayTree,
    proposal: InvolutiveState,
    v_new: ArrayTree,
    is_accepted: Array,
) -> InvolutiveState:
    """Select the proposal or the current state, then apply ``move.finalize``.

    Args:
        move: the involutive move.
        state: current state.
        v: auxiliary variable drawn at ``state``.
        proposal: proposed state (from :func:`transition`).
        v_new: proposed auxiliary variable.
        is_accepted: boolean scalar.

    Returns:
        The next state.
    """
    new_state, new_v = jax.tree.map(
        lambda a, b: jnp.where(is_accepted, a, b), (proposal, v_new), (state, v)
    )
    return move.finalize(new_state, new_v)


def step(
    rng_key: PRNGKey,
    state: InvolutiveState,
    move: Move,
    divergence_threshold: float = 1000.0,
) -> tuple[InvolutiveState, InvolutiveInfo]:
    """One involutive Metropolis-Hastings transition.

    Args:
        rng_key: PRNG key.
        state: current state.
        move: the involutive move.
        divergence_threshold: a step with $-\\log\\text{ratio}$ above this is divergent.

    Returns:
        ``(new_state, info)``.
    """
    key_aux, key_accept = jax.random.split(rng_key)
    v = move.sample_aux(key_aux, state)
    proposal, v_new, log_ratio = transition(move, state, v)
    log_u = jnp.log(jax.random.uniform(key_accept, dtype=jnp.result_type(log_ratio)))
    is_accepted = log_u < log_ratio
    new_state = accept_reject(move, state, v, proposal, v_new, is_accepted)
    info = InvolutiveInfo(
        acceptance_rate=jnp.exp(jnp.minimum(log_ratio, 0.0)),
        is_accepted=is_accepted,
        is_divergent=-log_ratio > divergence_threshold,
        log_accept_ratio=log_ratio,
        num_grad_evals=move.grad_evals(v),
    )
    return new_state, info


# ------------------------------------------------------- user-facing involutions (x, v)
def log_abs_det_jacobian(involution: Callable, x: ArrayLikeTree, v: ArrayLikeTree) -> Array:
    """$\\log|\\det J_f(x, v)|$ by forward-mode differentiation on the ravelled pytree.

    Args:
        involution: ``(x, v) -> (x', v')`` (extra outputs are ignored).
        x: position pytree.
        v: auxiliary pytree.

    Returns:
        Scalar log absolute determinant. Raises ValueError if the Jacobian is not square
        (the output ``(x', v')`` has a different size from the input ``(x, v)``).
    """
    return _value_and_log_abs_det(involution, x, v)[1]


def _value_and_log_abs_det(involution, x, v):
    z, unravel = ravel_pytree((x, v))

    def flat(z):
        out = tuple(involution(*unravel(z))[:2])
        return ravel_pytree(out)[0], out

    out_shape = jax.eval_shape(flat, z)[0].shape
    if out_shape != z.shape:
        raise ValueError(
            f"The Jacobian of the involution is not square: (x, v) has {z.size} entries but "
            f"f(x, v) has {out_shape[0]}. An involution must map (x, v) to the same space."
        )
    jac, out = jax.jacfwd(flat, has_aux=True)(z)
    return out, jnp.linalg.slogdet(jac)[1]


def from_involution(
    logdensity_fn: LogDensityFn,
    aux_sample: Callable[[PRNGKey, ArrayTree], ArrayTree],
    aux_logdensity: Callable[[ArrayTree, ArrayTree], Array],
    involution: Callable,
    *,
    with_grad: bool = False,
) -> Move:
    """Build a :class:`Move` from functions of the position.

    Args:
        logdensity_fn: $\\log p(x)$.
        aux_sample: ``(rng_key, x) -> v``, a draw from $p(v \\mid x)$.
        aux_logdensity: ``(v, x) -> scalar``, $\\log p(v \\mid x)$ (constants in $x$
            may be dropped).
        involution: ``(x, v) -> (x', v', log_abs_det)`` when $\\log|\\det J_f|$ is known
            (0 for swaps and flips), or ``(x', v')`` to have it computed by
            :func:`log_abs_det_jacobian` (``jax.jacfwd`` + ``slogdet``).
        with_grad: also cache $\\nabla \\log p(x')$ in the state.

    Returns:
        The move.
    """

    def sample_aux(rng_key, state):
        return aux_sample(rng_key, state.position)

    def aux_ld(v, state):
        return aux_logdensity(v, state.position)

    def involution_on_state(state, v):
        out = involution(state.position, v)
        if len(out) == 3:
            x_new, v_new, log_abs_det = out
        elif len(out) == 2:
            (x_new, v_new), log_abs_det = _value_and_log_abs_det(involution, state.position, v)
        else:
            raise ValueError(
                f"involution must return (x', v') or (x', v', log_abs_det), got {len(out)} items."
            )
        logdensity, grad = evaluate(logdensity_fn, x_new, with_grad)
        proposal = InvolutiveState(x_new, logdensity, grad, state.aux)
        return proposal, v_new, jnp.asarray(log_abs_det, jnp.result_type(logdensity))

    return Move(sample_aux, aux_ld, involution_on_state)


def _max_abs_diff(a, b) -> list[tuple[str, float]]:
    leaves_a, _ = jax.tree_util.tree_flatten_with_path(a)
    leaves_b = jax.tree.leaves(b)
    return [
        (jax.tree_util.keystr(path), float(jnp.max(jnp.abs(jnp.asarray(la) - jnp.asarray(lb)))))
        for (path, la), lb in zip(leaves_a, leaves_b, strict=True)
    ]


def check_involution(
    involution: Callable,
    x: ArrayLikeTree,
    v: ArrayLikeTree,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Check that ``involution`` is an involution at ``(x, v)`` with a square Jacobian.

    Verifies $f(f(x, v)) = (x, v)$ leaf by leaf (``allclose`` with ``rtol``/``atol``),
    that $f(x, v)$ has the pytree structure and shapes of $(x, v)$, and that the
    Jacobian is square. Runs eagerly (call it outside ``jit``).

    Args:
        involution: ``(x, v) -> (x', v'[, log_abs_det])``.
        x: position pytree.
        v: auxiliary pytree.
        rtol: relative tolerance.
        atol: absolute tolerance.

    Raises:
        ValueError: naming the mismatching leaf and the size of the error.
    """
    x = jax.tree.map(jnp.asarray, x)
    v = jax.tree.map(jnp.asarray, v)
    out = involution(x, v)
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise ValueError("involution must return a tuple (x', v') or (x', v', log_abs_det).")
    once = (out[0], out[1])
    s_in, s_out = jax.tree.structure((x, v)), jax.tree.structure(once)
    if s_in != s_out:
        raise ValueError(f"f(x, v) has structure {s_out}, expected the structure of (x, v) {s_in}.")
    shapes_in = [jnp.shape(a) for a in jax.tree.leaves((x, v))]
    shapes_out = [jnp.shape(a) for a in jax.tree.leaves(once)]
    if shapes_in != shapes_out:
        raise ValueError(f"f(x, v) has leaf shapes {shapes_out}, expected {shapes_in}.")
    _value_and_log_abs_det(involution, x, v)  # raises if the Jacobian is not square
    twice = involution(*once)[:2]
    for (name, err), a in zip(_max_abs_diff(twice, (x, v)), jax.tree.leaves((x, v)), strict=True):
        tol = atol + rtol * float(jnp.max(jnp.abs(a))) if jnp.size(a) else atol
        if not err <= tol:
            raise ValueError(
                f"f(f(x, v)) != (x, v): leaf {name} differs by {err:.3g} (tolerance {tol:.3g}). "
                "The map is not an involution; e.g. HMC needs the momentum flip after leapfrog."
            )


# --------------------------------------------------------------------------- top level
def build_kernel(divergence_threshold: float = 1000.0, *, with_grad: bool = False) -> Callable:
    """Generic involutive kernel, BlackJAX style.

    Args:
        divergence_threshold: see :func:`step`.
        with_grad: cache gradients in the state (if the involution uses them).

    Returns:
        ``kernel(rng_key, state, logdensity_fn, aux_sample, aux_logdensity, involution)
        -> (state, info)``.
    """

    def kernel(rng_key, state, logdensity_fn, aux_sample, aux_logdensity, involution):
        move = from_involution(
            logdensity_fn, aux_sample, aux_logdensity, involution, with_grad=with_grad
        )
        return step(rng_key, state, move, divergence_threshold)

    return kernel


def as_sampling_algorithm(
    move: Move,
    logdensity_fn: LogDensityFn,
    *,
    with_grad: bool = False,
    divergence_threshold: float = 1000.0,
) -> SamplingAlgorithm:
    """Wrap a :class:`Move` (e.g. from a combinator) as a ``blackjax.base.SamplingAlgorithm``.

    Args:
        move: the move.
        logdensity_fn: the same log density the move evaluates.
        with_grad: whether the move tracks gradients (must match the move).
        divergence_threshold: see :func:`step`.

    Returns:
        ``SamplingAlgorithm(init, step)`` with ``init(position)`` and ``step(rng_key, state)``.
    """

    def init_fn(position, rng_key=None):
        del rng_key
        return init(position, logdensity_fn, move, with_grad=with_grad)

    def step_fn(rng_key, state):
        return step(rng_key, state, move, divergence_threshold)

    return SamplingAlgorithm(init_fn, step_fn)


def imcmc(
    logdensity_fn: LogDensityFn,
    aux_sample: Callable[[PRNGKey, ArrayTree], ArrayTree],
    aux_logdensity: Callable[[ArrayTree, ArrayTree], Array],
    involution: Callable,
    *,
    divergence_threshold: float = 1000.0,
) -> SamplingAlgorithm:
    """The generic involutive MCMC sampler.

    Args:
        logdensity_fn: $\\log p(x)$, scalar.
        aux_sample: ``(rng_key, x) -> v`` draws $v \\sim p(v \\mid x)$.
        aux_logdensity: ``(v, x) -> scalar``, $\\log p(v \\mid x)$.
        involution: ``(x, v) -> (x', v', log_abs_det)`` or ``(x', v')`` (log-Jacobian computed
            with ``jax.jacfwd`` and ``slogdet`` on the ravelled pytree).
        divergence_threshold: see :func:`step`.

    Returns:
        ``SamplingAlgorithm`` with ``init(position)`` and ``step(rng_key, state)``.

    Example:
        >>> flip = lambda x, v: (x + v, -v, 0.0)  # random-walk MH as an involution
        >>> algo = imcmc(logp, lambda k, x: jax.random.normal(k, x.shape),
        ...              lambda v, x: -0.5 * jnp.sum(v**2), flip)
    """
    move = from_involution(logdensity_fn, aux_sample, aux_logdensity, involution)
    return as_sampling_algorithm(move, logdensity_fn, divergence_threshold=divergence_threshold)
