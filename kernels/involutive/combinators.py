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

**Persistent state.** Each combinator owns one slot of ``state.aux`` and hands each inner move
a state whose ``aux`` is that move's own slot (as optax's ``chain`` gives each transformation
its own state): :func:`mixture` holds the tuple of its moves' slots, :func:`lifted` holds
``(d, slot of forward)``, :func:`partial_refresh` holds ``(v, has_v, slot of move)`` and
:func:`state_dependent_mixture` the slot its moves share. Hence any nesting runs, and is exact
whenever its parts are (e.g. ``lifted(partial_refresh(hmc), partial_refresh(hmc))``).
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


def _with(state: InvolutiveState, aux) -> InvolutiveState:
    return state._replace(aux=aux)


def _zeros(shape_tree):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape_tree)


def _identity(v):
    return v


def _negate(v):
    return jax.tree.map(jnp.negative, v)


def refresh(move: Move, rng_key, state, previous, alpha, flip: Callable = _negate) -> ArrayTree:
    """Draw $v$ from a $p(v \\mid x)$-invariant kernel that keeps part of ``flip(previous)``.

    ``move.refresh`` when the move defines one; otherwise
    $\\alpha\\,\\mathrm{flip}(v_{\\mathrm{prev}}) + \\sqrt{1-\\alpha^2}\\,\\varepsilon$ with
    $\\varepsilon \\sim$ ``move.sample_aux`` (exact for a zero-mean Gaussian $p(v)$ independent
    of $x$).

    Args:
        move: the move whose auxiliary variable is refreshed.
        rng_key: PRNG key.
        state: current state (``aux`` is ``move``'s own slot).
        previous: the auxiliary variable after the previous step.
        alpha: persistence in $[0, 1)$.
        flip: $p(v)$-preserving map applied to ``previous`` first.

    Returns:
        The new auxiliary variable.
    """
    if move.refresh is not None:
        return move.refresh(rng_key, state, previous, alpha, flip)
    fresh = move.sample_aux(rng_key, state)
    scale = jnp.sqrt(1.0 - jnp.square(alpha))
    return jax.tree.map(lambda a, e: alpha * a + scale * e, flip(previous), fresh)


def _int(x):
    return jnp.asarray(x, jnp.int32)


def mixture(moves: Sequence[Move], weights: Array | None = None) -> Move:
    """Mixture of involutive moves with state-independent weights.

    Auxiliary $(t, v_1, \\dots, v_K)$, $t \\sim \\mathrm{Cat}(w)$, $v_t \\sim p_t(v \\mid x)$ and
    the other $v_k$ fixed at zero; involution $(x, t, v_t) \\mapsto (f_t(x, v_t), t, v_t')$;
    acceptance $\\min\\{1, p(x')p_t(v_t' \\mid x')/(p(x)p_t(v_t \\mid x))|\\det J_{f_t}|\\}$ (the
    $w_t$ cancel). The moves may have auxiliary variables and persistent states of any
    structure (each keeps its own slot; a move not drawn keeps its slot unchanged), but must
    agree on whether the state tracks ``logdensity_grad``.

    Under :func:`partial_refresh` a component keeps its previous auxiliary variable when it is
    drawn twice in a row and draws a fresh one otherwise (exact for any component laws).

    Args:
        moves: the $K$ moves.
        weights: ``(K,)`` nonnegative weights, uniform by default.

    Returns:
        The mixture move (persistent state: the tuple of the moves' slots).
    """
    moves = _check_moves(moves)
    k = len(moves)
    log_w = jnp.zeros(k) if weights is None else jnp.log(jnp.asarray(weights) / jnp.sum(weights))
    if log_w.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {log_w.shape}.")

    def sub(state, i):
        return _with(state, state.aux[i])

    def zeros_aux(state):
        return [
            _zeros(jax.eval_shape(m.sample_aux, jax.random.key(0), sub(state, i)))
            for i, m in enumerate(moves)
        ]

    def draw(i, rng_key, state, previous, alpha, flip):
        vs = zeros_aux(state)
        if previous is None:
            vs[i] = moves[i].sample_aux(rng_key, sub(state, i))
        else:
            t_prev, vs_prev = previous
            key_keep, key_fresh = jax.random.split(rng_key)
            kept = refresh(moves[i], key_keep, sub(state, i), vs_prev[i], alpha, flip)
            fresh = moves[i].sample_aux(key_fresh, sub(state, i))
            vs[i] = jax.tree.map(lambda a, b: jnp.where(t_prev == i, a, b), kept, fresh)
        return tuple(vs)

    def sample(rng_key, state, previous=None, alpha=0.0, flip=_negate):
        key_t, key_v = jax.random.split(rng_key)
        t = _int(jax.random.categorical(key_t, log_w))
        branches = [(lambda key, s, i=i: draw(i, key, s, previous, alpha, flip)) for i in range(k)]
        return t, jax.lax.switch(t, branches, key_v, state)

    def sample_aux(rng_key, state):
        return sample(rng_key, state)

    def refresh_aux(rng_key, state, previous, alpha, flip):
        return sample(rng_key, state, previous, alpha, flip)

    def aux_logdensity(aux, state):
        t, vs = aux
        branches = [
            (lambda vs, s, i=i, m=m: jnp.asarray(m.aux_logdensity(vs[i], sub(s, i)), log_w.dtype))
            for i, m in enumerate(moves)
        ]
        return log_w[t] + jax.lax.switch(t, branches, vs, state)

    def involution(state, aux):
        t, vs = aux

        def branch(i, state, vs):
            new_sub, v_new, log_abs_det = moves[i].involution(sub(state, i), vs[i])
            vs = list(vs)
            vs[i] = v_new
            log_abs_det = jnp.asarray(log_abs_det, jnp.result_type(new_sub.logdensity))
            return _with(new_sub, state.aux), tuple(vs), log_abs_det

        new_state, vs_new, log_abs_det = jax.lax.switch(
            t, [(lambda s, v, i=i: branch(i, s, v)) for i in range(k)], state, vs
        )
        return new_state, (t, vs_new), log_abs_det

    def finalize(state, aux):
        t, vs = aux

        def branch(i, state, vs):
            new_sub = moves[i].finalize(sub(state, i), vs[i])
            slots = list(state.aux)
            slots[i] = new_sub.aux
            return _with(new_sub, tuple(slots))

        return jax.lax.switch(t, [(lambda s, v, i=i: branch(i, s, v)) for i in range(k)], state, vs)

    def init_aux(state):
        return tuple(m.init_aux(_with(state, None)) for m in moves)

    def grad_evals(aux):
        t, vs = aux
        return jax.lax.switch(
            t, [(lambda vs, m=m, i=i: _int(m.grad_evals(vs[i]))) for i, m in enumerate(moves)], vs
        )

    return Move(sample_aux, aux_logdensity, involution, finalize, init_aux, grad_evals, refresh_aux)


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

    The moves act on one auxiliary space, so they share one persistent slot (``moves[0]``'s;
    all moves must lay it out alike); ``moves[t].finalize`` updates it. Under
    :func:`partial_refresh`, $v$ is refreshed and $t$ drawn afresh given the new $v$.

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
        return v, _int(jax.random.categorical(key_t, log_probs(state, v)))

    def refresh_aux(rng_key, state, previous, alpha, flip):
        key_v, key_t = jax.random.split(rng_key)
        v = refresh(base, key_v, state, previous[0], alpha, flip)
        return v, _int(jax.random.categorical(key_t, log_probs(state, v)))

    def aux_logdensity(aux, state):
        v, t = aux
        return base.aux_logdensity(v, state) + log_probs(state, v)[t]

    def involution(state, aux):
        v, t = aux

        def branch(m, state, v):
            new_state, v_new, log_abs_det = m.involution(state, v)
            log_abs_det = jnp.asarray(log_abs_det, jnp.result_type(new_state.logdensity))
            return _with(new_state, state.aux), v_new, log_abs_det

        new_state, v_new, log_abs_det = jax.lax.switch(
            t, [(lambda s, v, m=m: branch(m, s, v)) for m in moves], state, v
        )
        return new_state, (v_new, t), log_abs_det

    def finalize(state, aux):
        v, t = aux
        return jax.lax.switch(t, [m.finalize for m in moves], state, v)

    def grad_evals(aux):
        v, t = aux
        return jax.lax.switch(t, [(lambda v, m=m: _int(m.grad_evals(v))) for m in moves], v)

    return Move(
        sample_aux, aux_logdensity, involution, finalize, base.init_aux, grad_evals, refresh_aux
    )


def lifted(forward: Move, backward: Move) -> Move:
    """Lift a bijection into an irreversible chain with a direction variable (paper, Sec. 4).

    ``forward.involution`` is used as a *bijection* $g$ (it need not be an involution) and
    ``backward.involution`` as $g^{-1}$; the auxiliary distribution is ``forward``'s. The
    state carries $d \\in \\{-1, +1\\}$ with uniform $p(d)$. The
    involution on $(x, v, d)$ is $(g(x, v), -1)$ if $d = +1$ and
    $(g^{-1}(x, v), +1)$ if $d = -1$, with acceptance
    $\\min\\{1, p(x')p(v' \\mid x')/(p(x)p(v \\mid x))|\\det J_{g^{\\pm 1}}|\\}$;
    after the accept/reject test $d$ is negated. Hence an accepted step keeps moving in
    direction $d$ and a rejection reverses it. Invariant: $p(x)\\,\\mathrm{U}(d)$.

    Args:
        forward: provides the auxiliary distribution, $g$ and the persistent slot.
        backward: provides $g^{-1}$ (same auxiliary space and slot layout).

    Returns:
        The lifted move (persistent state ``(d, slot of forward)``; initial $d = +1$).
    """

    def sub(state):
        return _with(state, state.aux[1])

    def sample_aux(rng_key, state):
        return forward.sample_aux(rng_key, sub(state)), state.aux[0]

    def refresh_aux(rng_key, state, previous, alpha, flip):
        return refresh(forward, rng_key, sub(state), previous[0], alpha, flip), state.aux[0]

    def aux_logdensity(aux, state):
        v, _ = aux
        return forward.aux_logdensity(v, sub(state))

    def involution(state, aux):
        v, d = aux

        def go(m):
            def f(s, v):
                new_state, v_new, log_abs_det = m.involution(s, v)
                log_abs_det = jnp.asarray(log_abs_det, jnp.result_type(new_state.logdensity))
                return _with(new_state, s.aux), v_new, log_abs_det

            return f

        new_state, v_new, log_abs_det = jax.lax.cond(
            d > 0, go(forward), go(backward), sub(state), v
        )
        return _with(new_state, state.aux), (v_new, -d), log_abs_det

    def finalize(state: InvolutiveState, aux):
        v, d = aux
        new_sub = forward.finalize(sub(state), v)
        return _with(new_sub, (-d, new_sub.aux))

    def init_aux(state):
        return _int(1), forward.init_aux(_with(state, None))

    def grad_evals(aux):
        return forward.grad_evals(aux[0])

    return Move(sample_aux, aux_logdensity, involution, finalize, init_aux, grad_evals, refresh_aux)


def partial_refresh(move: Move, alpha: float, flip: Callable | None = _negate) -> Move:
    """Persistent auxiliary variable with partial refresh (paper, Sec. 4; Horowitz 1991).

    The state carries the auxiliary variable $v$ of the previous step. Each step draws the
    new $v$ from a $p(v \\mid x)$-invariant kernel that keeps part of ``flip(v)``
    (:func:`refresh`: $v \\leftarrow \\alpha\\,\\mathrm{flip}(v) + \\sqrt{1-\\alpha^2}\\,
    \\varepsilon$ for a zero-mean Gaussian $p(v)$ independent of $x$, e.g. HMC momenta;
    combinators refresh their own parts), then runs ``move``'s involution and
    accept/reject on $(x, v)$ and stores the resulting $v$. The first step draws $v$ afresh,
    so a chain started at $x \\sim p$ is stationary from the start. With the momentum flip
    inside the HMC involution and ``flip = negate``, an accepted step continues the trajectory
    and a rejection reverses it (irreversible chain). Invariant: $p(x)p(v \\mid x)$.

    Args:
        move: a move whose auxiliary variable is a zero-mean Gaussian independent of $x$, or
            a combinator over such moves.
        alpha: persistence in $[0, 1)$; 0 recovers ``move``.
        flip: map applied to $v$ before the refresh, preserving $p(v)$; negation by
            default, ``None`` for the identity.

    Returns:
        The move (persistent state ``(v, has_v, slot of move)``).
    """
    if not isinstance(alpha, jax.core.Tracer) and not 0.0 <= float(alpha) < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}.")
    flip = flip or _identity

    def sub(state):
        return _with(state, state.aux[2])

    def sample_aux(rng_key, state):
        previous, has_previous, _ = state.aux
        key_keep, key_fresh = jax.random.split(rng_key)
        kept = refresh(move, key_keep, sub(state), previous, alpha, flip)
        fresh = move.sample_aux(key_fresh, sub(state))
        return jax.tree.map(lambda a, b: jnp.where(has_previous, a, b), kept, fresh)

    def refresh_aux(rng_key, state, previous, alpha_outer, flip_outer):
        return refresh(move, rng_key, sub(state), previous, alpha_outer, flip_outer)

    def aux_logdensity(v, state):
        return move.aux_logdensity(v, sub(state))

    def involution(state, v):
        new_sub, v_new, log_abs_det = move.involution(sub(state), v)
        return _with(new_sub, state.aux), v_new, log_abs_det

    def finalize(state, v):
        new_sub = move.finalize(sub(state), v)
        return _with(new_sub, (v, jnp.asarray(True), new_sub.aux))

    def init_aux(state):
        inner = _with(state, move.init_aux(_with(state, None)))
        shape = jax.eval_shape(move.sample_aux, jax.random.key(0), inner)
        return _zeros(shape), jnp.asarray(False), inner.aux

    return Move(
        sample_aux, aux_logdensity, involution, finalize, init_aux, move.grad_evals, refresh_aux
    )
