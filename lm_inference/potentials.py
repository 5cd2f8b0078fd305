r"""Potentials ``log phi(s_{1:T})`` for :class:`lm_inference.Target`.

Every potential maps one ``[T]`` token array to a scalar ``log phi`` and is a JAX function, so it
is vmapped and jitted with the SMC sweep (it is evaluated only at the last step).

- :func:`indicator`, :func:`threshold`: ``phi = 1[score(s) >= c]`` or ``phi = 1[...]`` from any
  JAX score (``phi <= 1``, so rejection sampling gives exact target samples);
- :func:`contains_token`, :func:`ends_with`: simple token-level events;
- :func:`infilling`: ``log phi(s) = log p0(continuation | prompt, s)`` computed with the LM itself;
- :func:`host`: an arbitrary Python callable on token ids or decoded text (e.g. a classifier),
  run on the host through ``jax.pure_callback``;
- :func:`product`, :func:`tempered`: composition.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from kernels.types import Array, PRNGKey

if TYPE_CHECKING:
    from lm_inference.target import Target

__all__ = [
    "indicator",
    "threshold",
    "contains_token",
    "ends_with",
    "infilling",
    "infilling_joint_samples",
    "host",
    "product",
    "tempered",
    "BUILTIN",
]


def indicator(event: Callable[[Array], Array]) -> Callable:
    """``log phi(s) = 0`` if ``event(s)`` else ``-inf`` (``event``: ``[T] -> bool``)."""

    def log_phi(tokens):
        return jnp.where(event(tokens), 0.0, -jnp.inf)

    return log_phi


def threshold(score: Callable[[Array], Array], c: float, soft: float | None = None) -> Callable:
    """``phi = 1[score(s) >= c]``, or with ``soft`` the smooth ``log sigmoid((score - c) / soft)``
    (both ``phi <= 1``)."""

    def log_phi(tokens):
        x = score(tokens) - c
        if soft is None:
            return jnp.where(x >= 0, 0.0, -jnp.inf)
        return jax.nn.log_sigmoid(x / soft)

    return log_phi


def contains_token(token_id: int) -> Callable:
    """``phi = 1[token_id in s]``."""
    return indicator(lambda s: jnp.any(s == token_id))


def ends_with(token_id: int) -> Callable:
    """``phi = 1[s_T == token_id]``."""
    return indicator(lambda s: s[-1] == token_id)


class _Infilling:
    uses_lm_params = True

    def __init__(self, lm, prompt_ids, continuation):
        self.lm = lm
        self.prompt = jnp.asarray(prompt_ids, jnp.int32)
        self.cont = jnp.asarray(continuation, jnp.int32)

    def __call__(self, tokens, params):
        ids = jnp.concatenate([self.prompt, tokens, self.cont])
        p, t, c = self.prompt.shape[0], tokens.shape[0], self.cont.shape[0]
        out, cache = self.lm.prefill(
            params, ids[None, : p + t], jnp.ones((1, p + t), jnp.int32), p + t + c
        )

        def body(carry, tok):
            out, cache = carry
            lp = jax.nn.log_softmax(out.logits[0].astype(jnp.float32))[tok]
            out, cache = self.lm.decode_step(params, tok[None], cache)
            return (out, cache), lp

        _, lps = jax.lax.scan(body, (out, cache), self.cont)
        return jnp.sum(lps)


def infilling(lm, prompt_ids: Array, continuation: Array) -> Callable:
    """``log phi(s) = log p0(continuation | prompt, s)`` with the LM itself (infilling target).

    The returned potential has ``uses_lm_params = True`` (called with the LM parameters). Use
    with EOS handling off (``Target(..., eos_token_id=-1)``). ``Z`` is then
    ``p0(continuation | prompt)`` marginally over the ``T`` middle tokens.
    """
    cont = np.asarray(continuation)
    if cont.ndim != 1 or cont.size == 0:
        raise ValueError("infilling: continuation must be a non-empty 1-D array of token ids.")
    return _Infilling(lm, prompt_ids, cont)


def infilling_joint_samples(key: PRNGKey, target: "Target", num_samples: int) -> Array:
    """Exact posterior samples for an infilling target by the joint-sampling trick.

    Sample ``(s, c) ~ p0(s, c | prompt)`` ancestrally (middle tokens then ``len(continuation)``
    more); keeping ``s`` from the draws whose ``c`` equals the continuation gives exact draws of
    ``sigma(s) ∝ p0(s) p0(continuation | s)``. This is rejection sampling with acceptance
    probability ``Z``; for a fixed budget it is exact, not approximate.

    Args:
        key: PRNG key.
        target: a target whose potential came from :func:`infilling`.
        num_samples: number of exact draws wanted.
    """
    from lm_inference.target import Target
    from lm_inference.twisted_smc import smc

    pot = target.log_potential
    if not isinstance(pot, _Infilling):
        raise ValueError("infilling_joint_samples: the target's potential is not infilling(...).")
    joint = Target(target.lm, target.prompt_ids, target.num_tokens + pot.cont.shape[0], None, -1)
    T = target.num_tokens
    out, n = [], 0
    for _ in range(1000):
        key, k = jax.random.split(key)
        s = np.asarray(smc(k, joint, 1024, ess_threshold=0.0).samples)
        keep = np.all(s[:, T:] == np.asarray(pot.cont), axis=1)
        out.append(s[keep, :T])
        n += int(keep.sum())
        if n >= num_samples:
            return jnp.asarray(np.concatenate(out)[:num_samples])
    raise ValueError("infilling_joint_samples: continuation too unlikely for the joint trick.")


def host(fn: Callable, decode: Callable | None = None) -> Callable:
    """An arbitrary Python ``log phi`` on the host via ``jax.pure_callback``.

    Args:
        fn: ``tokens (numpy [T] int) -> float`` or, with ``decode``, ``text -> float``.
        decode: optional ``tokens -> text`` (e.g. ``target.decode`` on one row or a tokenizer's
            ``decode``).

    The callback is vectorized over particles (``vmap_method="sequential"``) and, as every
    potential, runs only at the last SMC step.
    """

    def np_fn(tokens):
        x = fn(decode(list(np.asarray(tokens))) if decode is not None else np.asarray(tokens))
        return np.asarray(x, np.float32)

    def log_phi(tokens):
        return jax.pure_callback(
            np_fn, jax.ShapeDtypeStruct((), jnp.float32), tokens, vmap_method="sequential"
        )

    return log_phi


def product(*potentials: Callable) -> Callable:
    """``log phi = sum_k log phi_k`` (the product of potentials)."""
    uses = any(getattr(p, "uses_lm_params", False) for p in potentials)

    def call(p, tokens, params):
        return p(tokens, params) if getattr(p, "uses_lm_params", False) else p(tokens)

    def log_phi(tokens, params=None):
        return sum(call(p, tokens, params) for p in potentials)

    log_phi.uses_lm_params = uses
    return log_phi


def tempered(potential: Callable, beta: float) -> Callable:
    """``phi^beta`` (``beta * log phi``; ``0 * -inf`` is taken as ``-inf`` only for ``beta > 0``)."""
    uses = getattr(potential, "uses_lm_params", False)

    def log_phi(tokens, params=None):
        lp = potential(tokens, params) if uses else potential(tokens)
        return jnp.where(beta == 0, 0.0, beta * lp)

    log_phi.uses_lm_params = uses
    return log_phi


BUILTIN = {
    "contains_token": contains_token,
    "ends_with": ends_with,
}
