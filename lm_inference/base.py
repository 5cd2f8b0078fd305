"""The decoding contract shared by the Hugging Face models and the token-level SMC.

A language model exposes two *pure* functions of explicit parameters, so that a whole SMC sweep
(``lax.scan`` over tokens) can be jitted with the parameters as an argument rather than as baked-in
constants:

- ``prefill(params, token_ids [B, P], attention_mask [B, P], max_length) -> (DecodeOutput, cache)``
  runs the (left-padded) prompt and returns the next-token logits and last hidden state at the
  final prompt position, and a KV cache with room for ``max_length`` positions in total.
- ``decode_step(params, tokens [B], cache) -> (DecodeOutput, cache)`` appends one token per row.

Every leaf of a cache from ``prefill`` has the batch (particle) axis first, so reordering
particles after resampling is ``reorder_cache(cache, ancestors)`` and sharing one prompt's prefill
among ``N`` particles is ``broadcast_cache(cache, N)`` (``N`` copies of the prompt). A model may
also offer ``broadcast_state(cache, N, prompt_length)`` / ``reorder_state(cache, ancestors)``,
which the SMC sweep uses when present: :class:`lm_inference.CausalLM`'s keep one shared copy of
the prompt's keys and values (``cache["prefix"]``, batch axis 1, never reordered).
"""

from typing import Any, NamedTuple, Protocol

from kernels.smc import sequential
from kernels.types import Array, ArrayTree


class DecodeOutput(NamedTuple):
    """Next-token logits ``[B, V]`` and the last layer's hidden state ``[B, H]`` (twist heads read it)."""

    logits: Array
    hidden: Array


class LanguageModel(Protocol):
    """What the SMC code needs from a causal LM (see the module docstring)."""

    config: Any
    tokenizer: Any  # a transformers tokenizer, or None for checkpoints without tokenizer files
    params: ArrayTree
    vocab_size: int
    hidden_size: int
    eos_token_id: int | None
    max_positions: int

    def logits(self, token_ids: Array, attention_mask: Array | None = None) -> Array: ...

    def prefill(
        self, params: ArrayTree, token_ids: Array, attention_mask: Array, max_length: int
    ) -> tuple[DecodeOutput, ArrayTree]: ...

    def decode_step(
        self, params: ArrayTree, tokens: Array, cache: ArrayTree
    ) -> tuple[DecodeOutput, ArrayTree]: ...


def reorder_cache(cache: ArrayTree, ancestors: Array) -> ArrayTree:
    """Gather every cache leaf along its leading (particle) axis: ``leaf[ancestors]``
    (:func:`kernels.smc.sequential.gather`)."""
    return sequential.gather(cache, ancestors)


def broadcast_cache(cache: ArrayTree, num_particles: int) -> ArrayTree:
    """Repeat a batch-1 cache (one prompt's prefill) for ``num_particles`` particles
    (:func:`kernels.smc.sequential.broadcast`)."""
    return sequential.broadcast(cache, num_particles)
