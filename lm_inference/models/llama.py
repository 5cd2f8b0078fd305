"""The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM) as one flax nnx module.

Pre-norm with RMSNorm, rotary position embeddings (with Llama 3 / linear rope scaling),
grouped-query attention (``num_key_value_heads`` <= ``num_attention_heads``), SwiGLU MLP
``down(act(gate(x)) * up(x))``, tied or untied output head. The variants differ only in:

| model_type | q/k/v bias | o bias | sliding window |
|---|---|---|---|
| llama | ``attention_bias`` | ``attention_bias`` | none |
| mistral | no | no | ``sliding_window`` on every layer (when set) |
| qwen2 | yes | no | on the layers ``layer_types`` marks ``sliding_attention`` |
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from kernels.types import Array
from lm_inference.models.layers import (
    Embedding,
    Linear,
    RMSNorm,
    activation,
    apply_rope,
    attend,
    attention_mask,
    rope_inverse_frequencies,
    write_kv,
)

__all__ = ["LlamaForCausalLM", "layer_windows", "head_dim"]


def head_dim(config) -> int:
    """``config.head_dim``, or ``hidden_size / num_attention_heads`` when unset."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def layer_windows(config) -> list[int | None]:
    """The attention window of every layer (``None`` for full causal attention)."""
    n = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    if config.model_type == "mistral":
        return [window] * n
    types = getattr(config, "layer_types", None)
    if types is None or window is None:
        return [None] * n
    return [window if t == "sliding_attention" else None for t in types]


def _biases(config) -> tuple[bool, bool, bool]:
    """``(qkv bias, o bias, mlp bias)`` for the variant."""
    if config.model_type == "qwen2":
        return True, False, False
    if config.model_type == "mistral":
        return False, False, False
    bias = bool(getattr(config, "attention_bias", False))
    return bias, bias, bool(getattr(config, "mlp_bias", False))


class LlamaAttention(nnx.Module):
    def __init__(self, config, window: int | None, dtype):
        h, d = config.hidden_size, head_dim(config)
        self.num_heads, self.num_kv = config.num_attention_heads, config.num_key_value_heads
        qkv_bias, o_bias, _ = _biases(config)
        self.q_proj = Linear(h, self.num_heads * d, qkv_bias, dtype)
        self.k_proj = Linear(h, self.num_kv * d, qkv_bias, dtype)
        self.v_proj = Linear(h, self.num_kv * d, qkv_bias, dtype)
        self.o_proj = Linear(self.num_heads * d, h, o_bias, dtype)
        self.window = window
        self.scale = d**-0.5

    def __call__(self, x, positions, inv_freq, cache, valid, start):
        b, t, _ = x.shape
        q = apply_rope(self.q_proj(x).reshape(b, t, self.num_heads, -1), positions, inv_freq)
        k = apply_rope(self.k_proj(x).reshape(b, t, self.num_kv, -1), positions, inv_freq)
        v = self.v_proj(x).reshape(b, t, self.num_kv, -1)
        cache = write_kv(cache, k, v, start)
        mask = attention_mask(valid, start + jnp.arange(t), self.window)
        return self.o_proj(attend(q, cache["k"], cache["v"], mask, self.scale)), cache


class LlamaMLP(nnx.Module):
    def __init__(self, config, dtype):
        h, inner = config.hidden_size, config.intermediate_size
        bias = _biases(config)[2]
        self.gate_proj = Linear(h, inner, bias, dtype)
        self.up_proj = Linear(h, inner, bias, dtype)
        self.down_proj = Linear(inner, h, bias, dtype)
        self.act = activation(config.hidden_act)

    def __call__(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nnx.Module):
    def __init__(self, config, window: int | None, dtype):
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.self_attn = LlamaAttention(config, window, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.mlp = LlamaMLP(config, dtype)

    def __call__(self, x, positions, inv_freq, cache, valid, start):
        a, cache = self.self_attn(self.input_layernorm(x), positions, inv_freq, cache, valid, start)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class LlamaModel(nnx.Module):
    def __init__(self, config, dtype):
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype)
        windows = layer_windows(config)
        self.layers = nnx.List([LlamaDecoderLayer(config, w, dtype) for w in windows])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)


class LlamaForCausalLM(nnx.Module):
    """Llama-family causal LM; ``__call__`` returns final-norm hidden states and the cache."""

    def __init__(self, config, dtype):
        self.model = LlamaModel(config, dtype)
        tied = getattr(config, "tie_word_embeddings", False)
        self.lm_head = None if tied else Linear(config.hidden_size, config.vocab_size, False, dtype)
        # a constant, not a parameter: a tuple of floats is static (part of the graph definition)
        self.inv_freq = tuple(float(f) for f in rope_inverse_frequencies(config, head_dim(config)))

    def __call__(self, tokens: Array, positions: Array, layers: list, valid: Array, start):
        x = self.model.embed_tokens(tokens)
        inv_freq = jnp.asarray(self.inv_freq, jnp.float32)
        new = []
        for layer, cache in zip(self.model.layers, layers, strict=True):
            x, cache = layer(x, positions, inv_freq, cache, valid, start)
            new.append(cache)
        return self.model.norm(x), new

    def unembed(self, hidden: Array) -> Array:
        """Next-token logits from final hidden states."""
        if self.lm_head is None:
            return self.model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)
