"""Causal LM architectures in flax nnx, keyed by Hugging Face ``config.model_type``.

Each module's parameters live under Hugging Face's own names and layouts, so a checkpoint loads by
name (:mod:`lm_inference.loading`), and its ``__call__(tokens, positions, layers, valid, start)``
returns ``(final hidden states, updated KV cache of all layers)``, the layers under one
``lax.scan`` (:mod:`lm_inference.models.layers`).

Adding an architecture is declarative: a module in this package defines
``ARCHITECTURES = {model_type: Architecture(...)}`` stating its class, what it covers, its
dimensions and its sharding rules; the registry collects every module's table (nothing else
changes).

Sharding rules (:data:`Rules`) map a parameter's dotted Hugging Face name (a regular expression,
first match wins) to the mesh axis of each of its dimensions, for the ``'model'`` axis of a
``('particles', 'model')`` mesh (:mod:`lm_inference.sharding`): tensor parallelism in Megatron's
pattern, projections into the heads and the MLP width split over their output features
(column-parallel), the projections back to the hidden size over their input features
(row-parallel), the embedding and output head over the vocabulary; norms and anything unmatched
are replicated. Rules only place data: XLA's partitioner keeps every result equal to the
unsharded one whatever the rules say.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "UnsupportedArchitectureError",
    "Architecture",
    "Dims",
    "Rules",
    "DECODER_RULES",
    "module_class",
    "dims",
    "rules",
    "registry",
]


class Dims(NamedTuple):
    """Sizes the cache and the SMC code need."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int


Rules = tuple[tuple[str, tuple[str | None, ...]], ...]
"""``((regex on the dotted name, mesh axis per dimension), ...)``; first match wins."""

_COL, _ROW, _VOCAB = ("model", None), (None, "model"), ("model", None)

DECODER_RULES: Rules = (
    # Linear weights are [out, in]: column-parallel splits out, row-parallel splits in
    (r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.weight$", _COL),
    (r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.bias$", ("model",)),
    (r"\.(o_proj|down_proj)\.weight$", _ROW),
    (r"(embed_tokens|lm_head)\.weight$", _VOCAB),
)
"""Llama-style names (Llama, Mistral, Qwen2/3, Gemma 2/3, OLMo 2, SmolLM3)."""


class Architecture(NamedTuple):
    """One ``model_type``: its nnx module class, a description, its :class:`Dims` and its
    sharding :data:`Rules`."""

    module: Any  # nnx.Module subclass: ``cls(config, dtype)``
    description: str
    dims: Callable[[Any], Dims]
    rules: Rules = DECODER_RULES


def decoder_dims(config) -> Dims:
    """:class:`Dims` of the common decoder config (``num_hidden_layers``, ``num_attention_heads``,
    ``num_key_value_heads``, optional ``head_dim``, ``max_position_embeddings``)."""
    heads = config.num_attention_heads
    return Dims(
        config.num_hidden_layers,
        heads,
        getattr(config, "num_key_value_heads", None) or heads,
        getattr(config, "head_dim", None) or config.hidden_size // heads,
        config.hidden_size,
        config.vocab_size,
        config.max_position_embeddings,
    )


_NOT_ARCHITECTURES = {"layers"}
_registry: dict[str, Architecture] | None = None


def registry() -> dict[str, Architecture]:
    """``model_type -> Architecture`` collected from every module of this package."""
    global _registry
    if _registry is None:
        table: dict[str, Architecture] = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name in _NOT_ARCHITECTURES or info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"{__name__}.{info.name}")
            for key, arch in getattr(mod, "ARCHITECTURES", {}).items():
                if key in table:
                    raise RuntimeError(f"model_type {key!r} is registered twice ({info.name})")
                table[key] = arch
        _registry = dict(sorted(table.items()))
    return _registry


class UnsupportedArchitectureError(ValueError):
    """A checkpoint whose ``model_type`` has no JAX implementation here."""


def _check(config) -> Architecture:
    model_type = getattr(config, "model_type", None)
    table = registry()
    if model_type not in table:
        supported = ", ".join(f"{k} ({v.description})" for k, v in table.items())
        archs = getattr(config, "architectures", None)
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r}{f' {archs}' if archs else ''} is not supported; "
            f"supported model types: {supported}."
        )
    return table[model_type]


def module_class(config):
    """The nnx module class implementing ``config.model_type``."""
    return _check(config).module


def dims(config) -> Dims:
    """:class:`Dims` read from a Hugging Face config."""
    return _check(config).dims(config)


def rules(config) -> Rules:
    """The sharding :data:`Rules` of ``config.model_type``."""
    return _check(config).rules


def __getattr__(name):
    if name == "SUPPORTED_ARCHITECTURES":  # ``model_type -> description``, built on first use
        return {k: v.description for k, v in registry().items()}
    raise AttributeError(name)
