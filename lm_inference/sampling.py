r"""Batched ancestral sampling with a KV cache, and exact sequence log-probabilities.

Sampling draws ``s_t ~ softmax(filter(logits_t) / temperature)`` for ``t = 1..T`` in one jitted
``lax.scan``: the prompt is prefilled once and its cache shared by all samples (broadcast along the
batch axis), then every step appends one token per sample. ``filter`` keeps the ``top_k`` largest
logits and/or the smallest set of tokens whose probability reaches ``top_p`` (nucleus). After a
sample emits EOS it is complete and is padded with EOS (log-probability 0).

``sequence_logprob`` is ``sum_t log p0(s_t | prompt, s_<t)`` under the untempered model, from one
full forward pass over ``prompt + continuation``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.smc.twisted import categorical
from kernels.types import Array, PRNGKey
from lm_inference.base import LanguageModel
from lm_inference.sharding import particle_constraint, resolve

__all__ = ["SampleOutput", "sample", "sequence_logprob", "filter_logits", "categorical"]

class SampleOutput(NamedTuple):
    """Output of :func:`sample`.

    Attributes:
        tokens: ``[N, T]`` (one prompt) or ``[B, N, T]`` (a batch of prompts) new token ids.
        log_probs: same shape, ``log p0(s_t | ...)`` under the untempered, unfiltered model
            (0 after EOS).
    """

    tokens: Array
    log_probs: Array


def filter_logits(
    logits: Array, temperature: float | Array = 1.0, top_k: int | None = None, top_p=None
) -> Array:
    """Temperature, then top-k and top-p (nucleus) filtering of ``[..., V]`` logits (-inf outside)."""
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        srt = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(srt, axis=-1)
        keep = jnp.cumsum(probs, axis=-1) - probs < top_p  # the most likely token is always kept
        cutoff = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def _prompt_batch(lm, prompt, attention_mask):
    """``(ids [B, P], mask [B, P], batched)`` from text, a list of texts, or token ids."""
    if isinstance(prompt, str) or (
        isinstance(prompt, list | tuple) and prompt and isinstance(prompt[0], str)
    ):
        ids, mask = lm.encode(prompt)
        return ids, mask, not isinstance(prompt, str)
    arr = np.asarray(prompt)
    batched = arr.ndim == 2
    ids = lm.check_ids(arr)
    if attention_mask is None:
        mask = jnp.ones_like(ids)
    else:
        mask = jnp.asarray(attention_mask, jnp.int32).reshape(ids.shape)
    if not bool(jnp.all(mask[:, -1] == 1)):
        raise ValueError(
            "prompts must be left-padded: the last column of attention_mask must be 1."
        )
    return ids, mask, batched


@partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("num_samples", "num_tokens", "top_k", "nucleus", "eos", "mesh"),
)
def _sample(
    lm, params, key, ids, mask, temperature, top_p, *, num_samples, num_tokens, top_k, nucleus, eos,
    mesh=None,
):
    b, p = ids.shape
    n = num_samples
    constrain = particle_constraint(mesh, lm.vocab_size)
    out, cache = lm.prefill(params, ids, mask, p + num_tokens)
    # share each prompt's prefill among its samples: rows (b, n) -> b * n
    cache = jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), cache)
    logits = jnp.repeat(out.logits, n, axis=0)

    def body(carry, key):
        logits, cache, done = constrain(carry)
        filt = filter_logits(logits, temperature, top_k, top_p if nucleus else None)
        s = categorical(key, filt)
        s = jnp.where(done, max(eos, 0), s)
        logp_s = jnp.take_along_axis(logits, s[:, None], 1)[:, 0] - jax.nn.logsumexp(logits, -1)
        lp = jnp.where(done, 0.0, logp_s)
        out, cache = lm.decode_step(params, s, cache)
        return (out.logits, cache, done | (s == eos)), (s, lp)

    done = jnp.zeros(b * n, bool)
    keys = jax.random.split(key, num_tokens)
    _, (tokens, lps) = jax.lax.scan(body, (logits, cache, done), keys)
    return tokens.T.reshape(b, n, num_tokens), lps.T.reshape(b, n, num_tokens)


def sample(
    key: PRNGKey,
    lm: LanguageModel,
    prompt: str | list[str] | Array,
    num_samples: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    attention_mask: Array | None = None,
    eos_token_id: int | None = None,
    mesh=None,
) -> SampleOutput:
    """Ancestral sampling of ``max_new_tokens`` tokens per sample (module docstring).

    Args:
        key: PRNG key.
        lm: a :class:`lm_inference.CausalLM` (or any model with the decoding contract).
        prompt: text, a list of texts, 1-D token ids, or left-padded ``[B, P]`` token ids.
        num_samples: ``N`` samples per prompt (they share the prompt's prefill).
        max_new_tokens: ``T``.
        temperature: ``> 0``; 1 samples the model itself.
        top_k: keep the ``k`` most likely tokens (``None``: all).
        top_p: nucleus probability in ``(0, 1]`` (``None``: no nucleus filter).
        attention_mask: ``[B, P]`` for left-padded token-id prompts.
        eos_token_id: defaults to ``lm.eos_token_id``; ``-1`` disables EOS handling.
        mesh: a ``('particles', 'model')`` mesh (:mod:`lm_inference.sharding`) to split the
            ``B N`` samples (and the weights, by the architecture's rules) over; default
            ``lm.mesh``. The samples equal the unsharded ones.

    Returns:
        :class:`SampleOutput` with ``[N, T]`` arrays for one prompt, ``[B, N, T]`` for a batch.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if top_k is not None and not 1 <= top_k <= lm.vocab_size:
        raise ValueError(f"top_k must be in [1, {lm.vocab_size}], got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    ids, mask, batched = _prompt_batch(lm, prompt, attention_mask)
    if ids.shape[1] + max_new_tokens > lm.max_positions:
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's maximum positions ({lm.max_positions}); shorten one of them."
        )
    eos = lm.eos_token_id if eos_token_id is None else eos_token_id
    eos = -1 if eos is None or eos < 0 else int(eos)
    mesh, params = resolve(lm, mesh, ids.shape[0] * num_samples)
    tokens, lps = _sample(
        lm,
        params,
        key,
        ids,
        mask,
        jnp.float32(temperature),
        jnp.float32(1.0 if top_p is None else top_p),
        num_samples=num_samples,
        num_tokens=max_new_tokens,
        top_k=top_k,
        nucleus=top_p is not None,
        eos=eos,
        mesh=mesh,
    )
    if not batched:
        tokens, lps = tokens[0], lps[0]
    return SampleOutput(tokens, lps)


@partial(jax.jit, static_argnums=(0,), static_argnames=("eos",))
def _logprob(lm, params, ids, mask, conts, *, eos):
    n, p = ids.shape
    full = jnp.concatenate([ids, conts], axis=1)
    fmask = jnp.concatenate([mask, jnp.ones_like(conts)], axis=1)
    logits = lm._full_logits(params, full, fmask)[:, p - 1 : -1]
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), conts[..., None], -1)[..., 0]
    if eos >= 0:  # tokens after the first EOS are padding
        is_eos = conts == eos
        lp = jnp.where(jnp.cumsum(is_eos, axis=1) - is_eos > 0, 0.0, lp)
    return lp.sum(axis=1)


def sequence_logprob(
    lm: LanguageModel,
    prompt: str | Array,
    continuations: Array,
    attention_mask: Array | None = None,
    eos_token_id: int | None = None,
) -> Array:
    """``log p0(continuation | prompt)`` for a batch of continuations, exactly.

    Args:
        lm: a :class:`lm_inference.CausalLM`.
        prompt: text, 1-D token ids shared by all continuations, or left-padded ``[N, P]`` ids.
        continuations: ``[N, T]`` token ids (or ``[T]`` for one).
        attention_mask: ``[N, P]`` for left-padded token-id prompts.
        eos_token_id: tokens after the first EOS count as padding (probability 1), as
            :func:`sample` emits them; defaults to ``lm.eos_token_id``; ``-1`` scores every token.

    Returns:
        ``[N]`` log-probabilities (a scalar for a 1-D continuation).
    """
    conts = np.asarray(continuations)
    single = conts.ndim == 1
    conts = lm.check_ids(conts)
    ids, mask, batched = _prompt_batch(lm, prompt, attention_mask)
    n = conts.shape[0]
    if not batched:
        ids, mask = (
            jnp.broadcast_to(ids, (n, ids.shape[1])),
            jnp.broadcast_to(mask, (n, ids.shape[1])),
        )
    if ids.shape[0] != n:
        raise ValueError(f"{ids.shape[0]} prompts for {n} continuations; give one prompt or N.")
    lm.check_ids(np.zeros((1, ids.shape[1] + conts.shape[1]), np.int32))
    eos = lm.eos_token_id if eos_token_id is None else eos_token_id
    eos = -1 if eos is None or eos < 0 else int(eos)
    out = _logprob(lm, lm.params, ids, mask, conts, eos=eos)
    return out[0] if single else out
