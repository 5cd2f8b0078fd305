"""A tiny, exactly enumerable language model implementing the decoding contract.

``TabularLM`` is a position-dependent Markov chain over a small vocabulary: the next-token
logits are a random table indexed by ``(position, last token)``,

$$p_0(s_t \\mid s_{<t}) = \\mathrm{softmax}(L[\\min(t, P_{max} - 1), s_{t-1}])_{s_t},$$

so every sequence probability is exact and cheap, and ``sigma``, ``log Z`` and the optimal twists
can be enumerated (:mod:`lm_inference.exact`). Its "hidden state" is a fixed random embedding of
``(position, last token)``, so twist heads (:mod:`lm_inference.twists`) can be trained on it.
It has the same ``prefill`` / ``decode_step`` interface as the Hugging Face models, with a cache
whose leaves have the particle axis first.
"""

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from kernels.types import Array, ArrayTree
from lm_inference.base import DecodeOutput

__all__ = ["TabularLM"]


@dataclass(eq=False)
class TabularLM:
    """Position-dependent bigram LM with random logits (see module docstring).

    Args:
        key: PRNG key for the random tables.
        vocab_size: ``V``.
        hidden_size: ``H`` of the random hidden-state embedding.
        max_positions: number of distinct positions with their own table (later positions reuse
            the last one).
        scale: standard deviation of the random logits.
        eos_token_id: optional end-of-sequence token.
    """

    key: Array
    vocab_size: int = 4
    hidden_size: int = 32
    max_positions: int = 16
    scale: float = 1.5
    eos_token_id: int | None = None
    config: dict = field(default_factory=dict)
    tokenizer: None = None

    def __post_init__(self):
        k1, k2 = jax.random.split(self.key)
        v, p, h = self.vocab_size, self.max_positions, self.hidden_size
        self.params = {
            "logits": self.scale * jax.random.normal(k1, (p, v, v)),
            "embed": jax.random.normal(k2, (p, v, h)) / jnp.sqrt(h),
        }
        self.config = {"model_type": "tabular", "vocab_size": v, "hidden_size": h}

    def _out(self, params: ArrayTree, pos: Array, last: Array) -> DecodeOutput:
        pos = jnp.minimum(pos, self.max_positions - 1)
        return DecodeOutput(params["logits"][pos, last], params["embed"][pos, last])

    def logits(self, token_ids: Array, attention_mask: Array | None = None) -> Array:
        """Full-sequence next-token logits ``[B, S, V]`` (positions count real tokens only)."""
        token_ids = jnp.asarray(token_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(token_ids)
        pos = jnp.cumsum(attention_mask, axis=1) - 1
        return self._out(self.params, jnp.maximum(pos, 0), token_ids).logits

    def prefill(
        self, params: ArrayTree, token_ids: Array, attention_mask: Array, max_length: int
    ) -> tuple[DecodeOutput, ArrayTree]:
        """Run a left-padded prompt ``[B, P]``; the cache is ``{"pos", "last"}`` per row."""
        pos = jnp.sum(attention_mask, axis=1).astype(jnp.int32) - 1
        last = token_ids[:, -1].astype(jnp.int32)
        return self._out(params, pos, last), {"pos": pos, "last": last}

    def decode_step(
        self, params: ArrayTree, tokens: Array, cache: ArrayTree
    ) -> tuple[DecodeOutput, ArrayTree]:
        """Append one token per row."""
        pos = cache["pos"] + 1
        tokens = tokens.astype(jnp.int32)
        return self._out(params, pos, tokens), {"pos": pos, "last": tokens}
