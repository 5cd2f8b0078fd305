r"""Combinators on involutive moves: the "tricks" of Neklyudov et al. (ICML 2020, Sec. 4).

Each takes :class:`~kernels.involutive.base.Move` objects and returns one, so they nest like
optax transformations. Every construction is itself an involutive move on an extended auxiliary
space, so the generic Metropolis-Hastings test of :func:`~kernels.involutive.base.step` applies.

* :func:`mixture`: auxiliary $(t, v)$ with $t \sim w$ independent of $x$,
  involution $(x, t, v) \mapsto (f_t(x, v), t)$ (mixture of involutions).
* :func:`state_dependent_mixture`: $t \sim p(t \mid x, v)$; the ratio
  $p(t \mid f_t(x, v)) / p(t \mid x, v)$ enters the acceptance.
* :func:`lifted`: a direction $d \in \{-1, +1\}$ carried in the state; the involution
  $(x, v, d) \mapsto (g^{d}(x, v), -d)$ uses a bijection $g$ and its inverse, and
  $d$ is flipped deterministically after every step, so an accepted move keeps its
  direction (irreversible, lifted chain on $p(x)\,\mathrm{U}(d)$).
* :func:`partial_refresh`: the auxiliary variable is carried in the state and refreshed by
  $v \leftarrow \alpha v + \sqrt{1 - \alpha^2}\,\varepsilon$ (a $p(v)$-invariant
  autoregressive kernel for a zero-mean Gaussian $p(v)$ independent of $x$),
  then flipped after the step (Horowitz's generalised HMC).
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from kernels.involutive.base import InvolutiveState, Move
from kernels.types import Array, ArrayTree

__all__ = ["mixture", "state_dependent_mixture", "lifted", "partial_refresh"]


def _check_moves(moves: Sequence[Move]) -> list[Move]:
    moves = list(moves)
    if not moves:
        raise ValueError("Need at least one move.")
    return moves


def mixture(moves: Sequence[Move], weights: Array | None = None) -> Move:
    """Mixture of involutive moves with state-independent weights.

    Auxiliary $(t, v)$, $t \\sim \\mathrm{Cat}(w)$, $v \\sim p_t(v \\mid x)$;
    involution $(x, (t, v)) \\mapsto (f_t(x, v), (t, v'))$; acceptance
    $\\min\\{1, p(x')p_t(v' \\mid x')/(p(x)p_t(v \\mid x))|\\det J_{f_t}|\\}$ (the
    $w_t$ cancel). All moves must produce auxiliary variables of the same pytree
    structure (``jax.lax.switch`` branches).

    Args:
        moves: the $K$ moves.
        weights: ``(K,)`` nonnegative weights, uniform by default.

    Returns:
        The mixture move.
    """
    moves = _check_moves(moves)
    k = len(moves)
    log_w = jnp.zeros(k) if weights is None else jnp.log(jnp.asarray(weights) / jnp.sum(weights))
    if log_w.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {log_w.shape}.")

    def sample_aux(rng_key, state):
        key_t, key_v = jax.random.split(rng_key)
        t = jax.random.categorical(key_t, log_w)
        v = jax.lax.switch(t, [m.sample_aux for m in moves], key_v, state)
        return t, v

    def aux_logdensity(aux, state):
        t, v = aux
        return log_w[t] + jax.lax.switch(t, [m.aux_logdensity for m in moves], v, state)

    def involution(state, aux):
        t, v = aux
        new_state, v_new, log_abs_det = jax.lax.switch(t, [m.involution for m in moves], state, v)
        return new_state, (t, v_new), log_abs_det

    def finalize(state, aux):
        t, v = aux
        return jax.lax.switch(t, [m.finalize for m in moves], state, v)

    def grad_evals(aux):
        t, v = aux
        return jax.lax.switch(t, [m.grad_evals for m in moves], v)

    return Move(sample_aux, aux_logdensity, involution, finalize, moves[0].init_aux, grad_evals)


def state_dependent_mixture(
    moves: Sequence[Move],
    log_weights_fn: Callable[[ArrayTree, ArrayTree], Array],
) -> Move:
    """Mixture whose involution index depends on the state (paper, Sec. 4, "state-dependent mixture").

    Auxiliary $(v, t)$ with $v \\sim p(v \\mid x)$ (the auxiliary distribution of
    ``moves[0]``, shared by all moves) and
    $t \\sim p(t \\mid x, v) = \\mathrm{softmax}(\\text{log\\_weights\\_fn}(x, v))_t$;
    involution $(x, v, t) \\mapsto (f_t(x, v), t)$; acceptance

    $$
    \\min\\Big\\{1, \\frac{p(x')p(v' \\mid x')\\,p(t \\mid x', v')}
    {p(x)p(v \\mid x)\\,p(t \\mid x, v)}|\\det J_{f_t}|\\Big\\}.
    $$

    Args:
        moves: the $K$ moves; all use ``moves[0].sample_aux``/``aux_logdensity``.
        log_weights_fn: ``(x, v) -> (K,)`` unnormalised log-probabilities of $t$.

    Returns:
        The mixture move.
    """
    moves = _check_moves(moves)
    base = moves[0]

    def log_probs(state, v):
        return jax.nn.log_softmax(log_weights_fn(state.position, v))

    def sample_aux(rng_key, state):
        key_v, key_t = jax.random.split(rng_key)
        v = base.sample_aux(key_v, state)
        t = jax.random.categorical(key_t, log_probs(state, v))
        return v, t

    def aux_logdensity(aux, state):
        v, t = aux
        return base.aux_logdensity(v, state) + log_probs(state, v)[t]

    def involution(state, aux):
        v, t = aux
        new_state, v_new, log_abs_det = jax.lax.switch(t, [m.involution for m in moves], state, v)
        return new_state, (v_new, t), log_abs_det

    def finalize(state, aux):
        v, t = aux
        return jax.lax.switch(t, [m.finalize for m in moves], state, v)

    def grad_evals(aux):
        v, t = aux
        return jax.lax.switch(t, [m.grad_evals for m in moves], v)

    return Move(sample_aux, aux_logdensity, involution, finalize, base.init_aux, grad_evals)


def lifted(forward: Move, backward: Move) -> Move:
    """Lift a bijection into an irreversible chain with a direction variable (paper, Sec. 4).

    ``forward.involution`` is used as a *bijection* $g$ (it need not be an involution) and
    ``backward.involution`` as $g^{-1}$; the auxiliary distribution is ``forward``'s. The
    state carries $d \\in \\{-1, +1\\}$ (``state.aux``) with uniform $p(d)$. The
    involution on $(x, v, d)$ is $(g(x, v), -1)$ if $d = +1$ and
    $(g^{-1}(x, v), +1)$ if $d = -1$, with acceptance
    $\\min\\{1, p(x')p(v' \\mid x')/(p(x)p(v \\mid x))|\\det J_{g^{\\pm 1}}|\\}$;
    after the accept/reject test $d$ is negated. Hence an accepted step keeps moving in
    direction $d$ and a rejection reverses it. Invariant: $p(x)\\,\\mathrm{U}(d)$.

    Args:
        forward: provides the auxiliary distribution and $g$.
        backward: provides $g^{-1}$ (same auxiliary space).

    Returns:
        The lifted move (its states carry the direction in ``aux``; initial $d = +1$).
    """

    def sample_aux(rng_key, state):
        return forward.sample_aux(rng_key, state), state.aux

    def aux_logdensity(aux, state):
        v, _ = aux
        return forward.aux_logdensity(v, state)

    def involution(state, aux):
        v, d = aux
        new_state, v_new, log_abs_det = jax.lax.cond(
            d > 0, forward.involution, backward.involution, state, v
        )
        return new_state._replace(aux=state.aux), (v_new, -d), log_abs_det

    def finalize(state: InvolutiveState, aux):
        v, d = aux
        return forward.finalize(state, v)._replace(aux=-d)

    def init_aux(state):
        del state
        return jnp.asarray(1, jnp.int32)

    def grad_evals(aux):
        return forward.grad_evals(aux[0])

    return Move(sample_aux, aux_logdensity, involution, finalize, init_aux, grad_evals)


def _negate(v):
    return jax.tree.map(jnp.negative, v)


def partial_refresh(move: Move, alpha: float, flip: Callable | None = _negate) -> Move:
    """Persistent auxiliary variable with partial refresh (paper, Sec. 4; Horowitz 1991).

    The state carries $v$. Each step draws $\\varepsilon \\sim p(v \\mid x)$ from
    ``move`` and sets $v \\leftarrow \\alpha v + \\sqrt{1-\\alpha^2}\\,\\varepsilon$, which
    leaves $p(v)$ invariant when it is a zero-mean Gaussian independent of $x$
    (e.g. HMC momenta); then runs ``move``'s involution and accept/reject on $(x, v)$, and
    stores ``flip(v)``. With the momentum flip inside the HMC involution and ``flip = negate``, an
    accepted step continues the trajectory and a rejection reverses it (irreversible chain).
    Invariant: $p(x)p(v)$.

    Args:
        move: a move with a zero-mean Gaussian auxiliary distribution independent of $x$.
        alpha: persistence in $[0, 1)$; 0 recovers ``move``.
        flip: map applied to $v$ after the step, preserving $p(v)$; negation by
            default, ``None`` for the identity.

    Returns:
        The move (its states carry $v$ in ``aux``; initial $v = 0$).
    """
    if not isinstance(alpha, jax.core.Tracer) and not 0.0 <= float(alpha) < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}.")
    flip = flip or (lambda v: v)
    scale = jnp.sqrt(1.0 - jnp.square(alpha))

    def sample_aux(rng_key, state):
        fresh = move.sample_aux(rng_key, state)
        return jax.tree.map(lambda a, e: alpha * a + scale * e, state.aux, fresh)

    def involution(state, v):
        new_state, v_new, log_abs_det = move.involution(state, v)
        return new_state._replace(aux=state.aux), v_new, log_abs_det

    def finalize(state, v):
        return move.finalize(state, v)._replace(aux=flip(v))

    def init_aux(state):
        shape = jax.eval_shape(move.sample_aux, jax.random.key(0), state)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)

    return Move(sample_aux, move.aux_logdensity, involution, finalize, init_aux, move.grad_evals)
