r"""The potential protocol of twisted SMC: per-particle state carried through the sweep.

A :class:`Potential` defines ``phi(s_{1:T})`` as a product of per-step factors and a value at
completion, computed from a state that the sweep carries for every particle (and gathers with the
KV cache and the tokens on resampling):

$$\log\phi(s) = \sum_{t \le \tau} \big(w^{next}_t(s_t) + w^{upd}_t\big) + c(x_\tau, s),
\qquad x_0 = \mathrm{init}(\text{prompt}),$$

where ``tau`` is the completion step (the first EOS, else the last of ``T`` tokens),
``init(params, prompt_ids [P], T)`` gives one particle's initial state, and at step
``t`` (0-based, the index of the token being generated)

- ``logw_next(params, x_{t-1}, t) -> [V]``: the log weight of every possible next token at once
  (a mask gives ``0`` / ``-inf``); the sweep folds it into the proposal
  ``q_t ∝ p0 · exp(logw_next) · psi_t`` (locally constrained decoding with its exact weight
  correction);
- ``update(params, x_{t-1}, s_t, t) -> (x_t, w^upd_t)``: the new state and a log weight
  increment known only once ``s_t`` is drawn;
- ``complete(params, x_tau, tokens [T]) -> c``: the log value at completion (``tokens`` is EOS-padded
  after ``tau``).

Any of the three may be ``None`` (zero). The prefix value ``Phi_t = exp(sum_{u <= t} ...)`` defines
the intermediate targets ``pi_t(s_{1:t}) ∝ p0(s_{1:t}) Phi_t(s_{1:t}) psi_t(s_{1:t})`` of SMC.
Contract: increments are ``<= log`` of what any extension can recover, i.e. a prefix value of
zero (``-inf``) means every extension has ``phi = 0`` (a dead particle is never revived), and every
value is a float in ``[-inf, inf)`` (never NaN or ``+inf``; the sweep raises if one is).

A plain function ``tokens [T] -> log phi`` is the stateless special case (only ``complete``); see
:func:`as_potential`. ``batched=True`` means the functions take and return states with a leading
particle axis ``[N, ...]`` (and tokens ``[N]`` / ``[N, T]``; e.g. another LM with its KV cache);
otherwise the sweep vmaps them. ``params`` is a pytree passed to every function as a jit argument
(e.g. another model's weights), so it is not baked into the compiled sweep.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp

from kernels.types import Array, ArrayTree

__all__ = ["Potential", "PotentialError", "as_potential", "product", "tempered", "log_value"]


class PotentialError(ValueError):
    """A potential returned something that is not a valid log weight."""


def _no_init(params, prompt, num_tokens):
    return ()


@dataclass(frozen=True, eq=False)
class Potential:
    """A stateful potential (module docstring).

    Attributes:
        init: ``(params, prompt_ids [P], T) -> state`` of one particle (no particle axis; ``T``
            is the static number of new tokens).
        update: ``(params, state, token, t) -> (state, log_w)`` or ``None``.
        logw_next: ``(params, state, t) -> [V]`` log weights of every next token, or ``None``.
        complete: ``(params, state, tokens [T]) -> log_w`` at completion, or ``None``.
        params: a pytree handed to the functions (a jit argument of the sweep).
        batched: whether the functions work on particle-batched states (see module docstring).
        name: shown in error messages and recorded with trained twists.
        info: extra static data (e.g. an automaton's sizes).
    """

    init: Callable = _no_init
    update: Callable | None = None
    logw_next: Callable | None = None
    complete: Callable | None = None
    params: ArrayTree = None
    batched: bool = False
    name: str = "potential"
    info: dict = field(default_factory=dict)

    # batched views used by the sweep -------------------------------------------------------
    def init_batch(self, params, prompt: Array, n: int, num_tokens: int) -> ArrayTree:
        """The state of ``n`` particles (the initial state broadcast along a new leading axis)."""
        x = self.init(params, prompt, num_tokens)
        return jax.tree.map(lambda a: jnp.broadcast_to(a[None], (n,) + jnp.shape(a)), x)

    def logw_next_batch(self, params, state, t) -> Array | None:
        if self.logw_next is None:
            return None
        if self.batched:
            return self.logw_next(params, state, t)
        return jax.vmap(self.logw_next, (None, 0, None))(params, state, t)

    def update_batch(self, params, state, tokens, t) -> tuple[ArrayTree, Array | None]:
        if self.update is None:
            return state, None
        if self.batched:
            return self.update(params, state, tokens, t)
        return jax.vmap(self.update, (None, 0, 0, None))(params, state, tokens, t)

    def complete_batch(self, params, state, tokens) -> Array | None:
        if self.complete is None:
            return None
        if self.batched:
            return self.complete(params, state, tokens)
        return jax.vmap(self.complete, (None, 0, 0))(params, state, tokens)

    def __call__(self, tokens: Array, prompt: Array | None = None, eos: int = -1) -> Array:
        """``log phi`` of one complete ``[T]`` sequence (see :func:`log_value`)."""
        return log_value(self, tokens, prompt, eos)


def log_value(pot: Potential, tokens: Array, prompt: Array | None = None, eos: int = -1) -> Array:
    """``log phi(s)`` of one ``[T]`` sequence: run ``init``, the steps up to the first ``eos``
    (``-1``: none) and ``complete`` (a reference implementation of what the sweep computes)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    prompt = jnp.zeros((1,), jnp.int32) if prompt is None else jnp.asarray(prompt, jnp.int32)
    T = tokens.shape[0]
    x = pot.init_batch(pot.params, prompt, 1, T)
    total = jnp.zeros(1, jnp.float32)
    done = jnp.zeros(1, bool)
    for t in range(T):
        s = tokens[t][None]
        lw = pot.logw_next_batch(pot.params, x, t)
        inc = jnp.zeros(1) if lw is None else jnp.take_along_axis(lw, s[:, None], 1)[:, 0]
        x_new, upd = pot.update_batch(pot.params, x, s, t)
        inc = inc if upd is None else inc + upd
        total = jnp.where(done, total, total + inc)
        x = jax.tree.map(lambda a, b, d=done: jnp.where(_bcast(d, a), a, b), x, x_new)
        done = done | (s == eos)
    c = pot.complete_batch(pot.params, x, tokens[None])
    return (total if c is None else total + c)[0]


def _bcast(mask: Array, like: Array) -> Array:
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(like) - 1))


def as_potential(fn: Callable | Potential | None, lm: Any = None, name: str | None = None):
    """A :class:`Potential` from a terminal ``tokens [T] -> log phi`` function (or ``None``).

    A function with ``uses_lm_params = True`` is called as ``fn(tokens, params)`` with ``lm``'s
    parameters.
    """
    if fn is None or isinstance(fn, Potential):
        return fn
    if not callable(fn):
        raise TypeError(
            "a potential must be a Potential (kernels.smc.potential, also lm_inference.potentials) or a callable "
            f"tokens [T] -> scalar log phi, got {type(fn).__name__}."
        )
    label = name or getattr(fn, "__name__", type(fn).__name__)
    if getattr(fn, "uses_lm_params", False):
        if lm is None:
            raise ValueError(f"potential {label!r} uses the LM's parameters: pass lm.")
        return Potential(complete=lambda p, x, s: fn(s, p), params=lm.params, name=label)
    return Potential(complete=lambda p, x, s: fn(s), name=label)


def _sum(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def product(*potentials: Callable | Potential) -> Potential:
    """``phi = prod_k phi_k``: states, increments and completions side by side (a tuple state)."""
    pots = [as_potential(p) for p in potentials if p is not None]
    if not pots:
        raise ValueError("product: give at least one potential.")

    def init(params, prompt, num_tokens):
        return tuple(p.init(q, prompt, num_tokens) for p, q in zip(pots, params, strict=True))

    def logw_next(params, state, t):
        out = None
        for p, q, x in zip(pots, params, state, strict=True):
            out = _sum(out, p.logw_next_batch(q, x, t))
        return out

    def update(params, state, tokens, t):
        new, inc = [], None
        for p, q, x in zip(pots, params, state, strict=True):
            x, w = p.update_batch(q, x, tokens, t)
            new.append(x)
            inc = _sum(inc, w)
        return tuple(new), (jnp.zeros(tokens.shape[0]) if inc is None else inc)

    def complete(params, state, tokens):
        out = None
        for p, q, x in zip(pots, params, state, strict=True):
            out = _sum(out, p.complete_batch(q, x, tokens))
        return jnp.zeros(tokens.shape[0]) if out is None else out

    return Potential(
        init=init,
        update=update if any(p.update is not None for p in pots) else None,
        logw_next=logw_next if any(p.logw_next is not None for p in pots) else None,
        complete=complete if any(p.complete is not None for p in pots) else None,
        params=tuple(p.params for p in pots),
        batched=True,
        name=" * ".join(p.name for p in pots),
    )


def _scale(beta, x):
    return None if x is None else jnp.where(beta == 0, 0.0, beta * x)


def tempered(potential: Callable | Potential, beta: float) -> Potential:
    """``phi^beta``: every log increment times ``beta`` (``beta = 0`` gives ``phi = 1``, also
    where ``phi = 0``). ``tempered(prompted(lm, b), beta)`` is a power of another LM."""
    pot = as_potential(potential)
    beta = float(beta)
    if beta < 0:
        raise ValueError(f"tempered: beta must be >= 0, got {beta} (a negative power revives zeros).")

    def update(params, state, tokens, t):
        x, w = pot.update_batch(params, state, tokens, t)
        return x, _scale(beta, w)

    return replace(
        pot,
        update=None if pot.update is None else update,
        logw_next=None
        if pot.logw_next is None
        else lambda q, x, t: _scale(beta, pot.logw_next_batch(q, x, t)),
        complete=None
        if pot.complete is None
        else lambda q, x, s: _scale(beta, pot.complete_batch(q, x, s)),
        batched=True,
        name=f"({pot.name})^{beta:g}",
    )
