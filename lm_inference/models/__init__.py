"""Causal LM architectures in flax nnx, keyed by Hugging Face ``config.model_type``.

Each module's parameters live under Hugging Face's own names and layouts, so a checkpoint loads by
name (:mod:`lm_inference.loading`), and its ``__call__(tokens, positions, layers, valid, start)``
returns ``(final hidden states, updated per-layer KV cache)`` (:mod:`lm_inference.models.layers`).
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "UnsupportedArchitectureError",
    "Dims",
    "module_class",
    "dims",
]

# model_type -> (module, class, what it covers)
_REGISTRY = {
    "gpt2": ("lm_inference.models.gpt2", "GPT2LMHeadModel", "GPT-2"),
    "gpt_neo": ("lm_inference.models.gpt_neo", "GPTNeoForCausalLM", "GPT-Neo (TinyStories)"),
    "llama": ("lm_inference.models.llama", "LlamaForCausalLM", "Llama 2/3, SmolLM"),
    "mistral": ("lm_inference.models.llama", "LlamaForCausalLM", "Mistral"),
    "qwen2": ("lm_inference.models.llama", "LlamaForCausalLM", "Qwen2"),
}

#: ``model_type -> description`` of every architecture :func:`lm_inference.load` accepts.
SUPPORTED_ARCHITECTURES = {k: v[2] for k, v in _REGISTRY.items()}


class UnsupportedArchitectureError(ValueError):
    """A checkpoint whose ``model_type`` has no JAX implementation here."""


class Dims(NamedTuple):
    """Sizes the cache and the SMC code need."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int


def _check(config) -> str:
    model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        supported = ", ".join(f"{k} ({v})" for k, v in SUPPORTED_ARCHITECTURES.items())
        archs = getattr(config, "architectures", None)
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r}{f' {archs}' if archs else ''} is not supported; "
            f"supported model types: {supported}."
        )
    return model_type


def module_class(config):
    """The nnx module class implementing ``config.model_type``."""
    mod, cls, _ = _REGISTRY[_check(config)]
    return getattr(importlib.import_module(mod), cls)


def dims(config) -> Dims:
    """:class:`Dims` read from a Hugging Face config."""
    model_type = _check(config)
    if model_type == "gpt2":
        h, n = config.n_embd, config.n_head
        return Dims(config.n_layer, n, n, h // n, h, config.vocab_size, config.n_positions)
    if model_type == "gpt_neo":
        h, n = config.hidden_size, config.num_heads
        return Dims(
            config.num_layers, n, n, h // n, h, config.vocab_size, config.max_position_embeddings
        )
    from lm_inference.models.llama import head_dim

    return Dims(
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads or config.num_attention_heads,
        head_dim(config),
        config.hidden_size,
        config.vocab_size,
        config.max_position_embeddings,
    )
