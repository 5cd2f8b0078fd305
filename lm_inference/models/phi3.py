r"""Phi-3 (``Phi3ForCausalLM``: Phi-3 / Phi-3.5 mini and medium, Phi-4-mini) as a flax nnx module.

A Llama-style pre-norm decoder (RMSNorm, grouped-query attention, SwiGLU MLP, no biases) with:

- a fused ``qkv_proj`` whose output is ``[q (H * D) | k (H_kv * D) | v (H_kv * D)]``;
- a fused ``gate_up_proj`` whose output is ``[gate | up]``: ``mlp(x) = down(up * act(gate))``;
- partial rotary embeddings (``partial_rotary_factor``: rope on the first dims of each head);
- ``longrope`` scaling: ``inv_freq_i = theta^{-2i/d} / f_i`` with ``f`` the ``short_factor`` or
  the ``long_factor`` list, and ``cos, sin`` multiplied by the attention factor ``a`` (so the
  rotated dims of q and k carry ``a``), ``a = sqrt(1 + ln(s) / ln(L0))`` with
  ``s = factor`` or ``max_position_embeddings / L0`` (``a = 1`` when ``s <= 1``),
  ``L0 = original_max_position_embeddings``, unless ``attention_factor`` is given;
- a sliding window on every layer when ``sliding_window`` is set.

**Short vs long factors.** transformers picks them per forward call: ``long`` iff
``max(position_ids) + 1 > L0`` over the whole batch, for every position of the call (and
``Phi3ForCausalLM.prepare_inputs_for_generation`` recomputes the cache once generation crosses
``L0``). With a static-shape cache this module picks them once per cache: ``long`` iff the cache
length ``S > L0`` (``S = T`` for a full forward pass, ``max_length`` for ``prefill`` / decoding).
So a full pass equals transformers' whenever the longest row is unpadded (the usual left-padded
batch), prefill + decoding equals the full pass over ``max_length`` tokens, and sampled log-probs
equal ``sequence_logprob``; generation that starts below ``L0`` in a cache longer than ``L0`` uses
the long factors from the first step, where transformers would switch mid-generation.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from kernels.types import Array
from lm_inference.models import Architecture, decoder_dims
from lm_inference.models.layers import (
    Embedding,
    Linear,
    RMSNorm,
    activation,
    apply_rope,
    attend,
    attention_mask,
    rope_inverse_frequencies,
    run_layers,
    write_kv,
)

__all__ = ["Phi3ForCausalLM", "longrope", "ARCHITECTURES"]


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope_params(config) -> dict:
    params = {**(getattr(config, "rope_scaling", None) or {})}
    params.update(getattr(config, "rope_parameters", None) or {})
    return params


def longrope(config, head_dim: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """``(short inv_freq, long inv_freq, attention factor a, L0)`` of a ``longrope`` config.

    ``inv_freq_i = 1 / (f_i theta^{2i/d})`` over the ``d = head_dim * partial_rotary_factor``
    rotated dims; ``a`` and ``L0`` as in the module docstring.
    """
    params = _rope_params(config)
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    dim = int(head_dim * float(params.get("partial_rotary_factor", 1.0)))
    # transformers lets a top-level ``original_max_position_embeddings`` (Phi-3) take precedence
    orig = getattr(config, "original_max_position_embeddings", None)
    orig = int(orig or params["original_max_position_embeddings"])
    base = theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    freqs = []
    for key in ("short_factor", "long_factor"):
        f = np.asarray(params[key], np.float64)
        if f.shape != base.shape:
            raise ValueError(f"longrope {key} has {f.size} entries; expected {base.size}.")
        freqs.append(1.0 / (f * base))
    factor = params.get("factor") or config.max_position_embeddings / orig
    a = params.get("attention_factor")
    if a is None:
        a = 1.0 if factor <= 1.0 else math.sqrt(1.0 + math.log(factor) / math.log(orig))
    return freqs[0], freqs[1], float(a), orig


class Phi3Attention(nnx.Module):
    """``o_proj(attend(rope(q), rope(k), v))`` with ``q, k, v`` split from ``qkv_proj``."""

    def __init__(self, config, dtype):
        h, d = config.hidden_size, _head_dim(config)
        self.num_heads, self.num_kv = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = d
        self.qkv_proj = Linear(h, (self.num_heads + 2 * self.num_kv) * d, False, dtype)
        self.o_proj = Linear(self.num_heads * d, h, False, dtype)
        self.window = getattr(config, "sliding_window", None)
        self.scale = d**-0.5

    def __call__(self, x, positions, rope, cache, valid, start, layer):
        b, t, _ = x.shape
        inv_freq, rope_scale = rope
        nq, nkv = self.num_heads * self.head_dim, self.num_kv * self.head_dim
        qkv = self.qkv_proj(x)
        q = qkv[..., :nq].reshape(b, t, self.num_heads, self.head_dim)
        k = qkv[..., nq : nq + nkv].reshape(b, t, self.num_kv, self.head_dim)
        v = qkv[..., nq + nkv :].reshape(b, t, self.num_kv, self.head_dim)
        q = apply_rope(q, positions, inv_freq, rope_scale)
        k = apply_rope(k, positions, inv_freq, rope_scale)
        cache, keys, values = write_kv(cache, layer, k, v, start)
        mask = attention_mask(valid, start + jnp.arange(t), self.window)
        return self.o_proj(attend(q, keys, values, mask, self.scale)), cache


class Phi3MLP(nnx.Module):
    """``down_proj(up * act(gate))`` with ``[gate | up] = gate_up_proj(x)``."""

    def __init__(self, config, dtype):
        h, inner = config.hidden_size, config.intermediate_size
        self.gate_up_proj = Linear(h, 2 * inner, False, dtype)
        self.down_proj = Linear(inner, h, False, dtype)
        self.act = activation(config.hidden_act)

    def __call__(self, x):
        gate, up = jnp.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(up * self.act(gate))


class Phi3DecoderLayer(nnx.Module):
    """``x += attn(input_layernorm(x)); x += mlp(post_attention_layernorm(x))``."""

    def __init__(self, config, dtype):
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.self_attn = Phi3Attention(config, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.mlp = Phi3MLP(config, dtype)

    def __call__(self, x, positions, rope, cache, valid, start, layer):
        h = self.input_layernorm(x)
        a, cache = self.self_attn(h, positions, rope, cache, valid, start, layer)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class Phi3Model(nnx.Module):
    def __init__(self, config, dtype):
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype)
        self.layers = nnx.List(
            [Phi3DecoderLayer(config, dtype) for _ in range(config.num_hidden_layers)]
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)


class Phi3ForCausalLM(nnx.Module):
    """Phi-3 causal LM; ``__call__`` returns final-norm hidden states and the cache."""

    def __init__(self, config, dtype):
        self.model = Phi3Model(config, dtype)
        tied = getattr(config, "tie_word_embeddings", False)
        self.lm_head = None if tied else Linear(config.hidden_size, config.vocab_size, False, dtype)
        d = _head_dim(config)
        rope_type = _rope_params(config).get("rope_type", "default") or "default"
        # constants, not parameters: tuples of floats are static (part of the graph definition)
        if rope_type == "longrope":
            short, long, scale, orig = longrope(config, d)
        elif rope_type == "default":
            short = long = rope_inverse_frequencies(config, d)
            scale, orig = 1.0, config.max_position_embeddings
        else:
            raise NotImplementedError(
                f"Phi-3 rope type {rope_type!r} is not supported; supported: default, longrope."
            )
        self.short_inv_freq = tuple(float(f) for f in short)
        self.long_inv_freq = tuple(float(f) for f in long)
        self.rope_scale = scale
        self.original_max_positions = orig

    def __call__(self, tokens: Array, positions: Array, layers: dict, valid: Array, start):
        x = self.model.embed_tokens(tokens)
        # static: the cache length (a shared prompt's slots included)
        length = layers["k"].shape[3] + (layers["prefix_k"].shape[3] if "prefix_k" in layers else 0)
        long = length > self.original_max_positions
        inv_freq = jnp.asarray(self.long_inv_freq if long else self.short_inv_freq, jnp.float32)
        rope = (inv_freq, self.rope_scale)

        def step(layer, x, kv, i, spec):  # every layer alike: no per-layer spec
            return layer(x, positions, rope, kv, valid, start, i)

        specs = [{}] * len(self.model.layers)
        x, kv = run_layers(self.model.layers, x, layers, specs, step)
        return self.model.norm(x), kv

    def unembed(self, hidden: Array) -> Array:
        """Next-token logits from final hidden states."""
        if self.lm_head is None:
            return self.model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)


# qkv_proj ([q | k | v] across heads) and gate_up_proj ([gate | up]) are fused across what a split
# must keep apart: replicated, the heads and the MLP width split after them
RULES = (
    (r"\.(o_proj|down_proj)\.weight$", (None, "model")),
    (r"(embed_tokens|lm_head)\.weight$", ("model", None)),
)

ARCHITECTURES = {
    "phi3": Architecture(Phi3ForCausalLM, "Phi-3, Phi-3.5, Phi-4-mini", decoder_dims, RULES),
}
