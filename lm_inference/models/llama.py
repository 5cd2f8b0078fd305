"""The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM) as one flax nnx module.

Pre-norm with RMSNorm, rotary position embeddings (with Llama 3 / linear rope scaling),
grouped-query attention (``num_key_value_heads`` <= ``num_attention_heads``), SwiGLU MLP
``down(act(gate(x)) * up(x))``, tied or untied output head. The variants differ only in:

| model_type | q/k/v bias | o bias | sliding window |
|---|---|---|---|
| llama | ``attention_bias`` | ``attention_bias`` | none |
| mistral | no | no | ``sliding_window`` on every layer (when set) |
| qwen2 | yes | no | on the layers ``layer_types`` marks ``sliding_attention`` |

The layers run under one scan (:func:`lm_inference.models.layers.run_layers`); what differs between
layers is in :meth:`LlamaForCausalLM.layer_specs` (the window; SmolLM3 adds the rope flag), not in
the layer modules, so that every layer has the same graph definition.

Further variants subclass these modules in their own files through four hooks:
:meth:`LlamaAttention.heads` (the pre-rope q, k, v), :meth:`LlamaAttention.rotate` (rope on q, k,
given the layer's spec), :meth:`LlamaForCausalLM.layer_specs` and ``LlamaForCausalLM.layer_class``
(the decoder block, built as ``cls(config, layer, dtype)``):

| model_type | module | what differs |
|---|---|---|
| qwen3 | :mod:`~lm_inference.models.qwen3` | RMSNorm per head on q and k, before rope; explicit ``head_dim`` |
| olmo2 | :mod:`~lm_inference.models.olmo2` | norms after attention and MLP (none before); RMSNorm on the whole q and k projections |
| smollm3 | :mod:`~lm_inference.models.smollm3` | no rope on the layers where ``no_rope_layers[i] == 0`` |
"""

from __future__ import annotations

import jax.numpy as jnp
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

__all__ = [
    "LlamaForCausalLM",
    "LlamaModel",
    "LlamaDecoderLayer",
    "LlamaAttention",
    "LlamaMLP",
    "layer_windows",
    "head_dim",
    "ARCHITECTURES",
]


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
    """``o_proj(attend(rope(q), rope(k), v))`` over layer ``layer`` of the cache, windowed by
    ``spec["window"]`` (:func:`layer_windows`)."""

    def __init__(self, config, layer: int, dtype):
        h, d = config.hidden_size, head_dim(config)
        self.num_heads, self.num_kv = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = d
        qkv_bias, o_bias, _ = _biases(config)
        self.q_proj = Linear(h, self.num_heads * d, qkv_bias, dtype)
        self.k_proj = Linear(h, self.num_kv * d, qkv_bias, dtype)
        self.v_proj = Linear(h, self.num_kv * d, qkv_bias, dtype)
        self.o_proj = Linear(self.num_heads * d, h, o_bias, dtype)
        self.scale = d**-0.5

    def heads(self, x: Array) -> tuple[Array, Array, Array]:
        """``q [B, T, H, D]`` and ``k, v [B, T, H_kv, D]`` before rope."""
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv, self.head_dim)
        return q, k, v

    def rotate(
        self, q: Array, k: Array, positions: Array, inv_freq: Array, spec: dict
    ) -> tuple[Array, Array]:
        """Rope on ``q`` and ``k``."""
        return apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)

    def __call__(self, x, positions, inv_freq, cache, valid, start, layer, spec):
        q, k, v = self.heads(x)
        q, k = self.rotate(q, k, positions, inv_freq, spec)
        cache, keys, values = write_kv(cache, layer, k, v, start)
        mask = attention_mask(valid, start + jnp.arange(x.shape[1]), spec["window"])
        return self.o_proj(attend(q, keys, values, mask, self.scale)), cache


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
    """Pre-norm block ``x += attn(input_layernorm(x)); x += mlp(post_attention_layernorm(x))``."""

    attention_class = LlamaAttention  # built as ``cls(config, layer, dtype)``

    def __init__(self, config, layer: int, dtype):
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.self_attn = self.attention_class(config, layer, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.mlp = LlamaMLP(config, dtype)

    def __call__(self, x, positions, inv_freq, cache, valid, start, layer, spec):
        h = self.input_layernorm(x)
        a, cache = self.self_attn(h, positions, inv_freq, cache, valid, start, layer, spec)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class LlamaModel(nnx.Module):
    def __init__(self, config, dtype, layer_class=LlamaDecoderLayer):
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype)
        n = config.num_hidden_layers
        self.layers = nnx.List([layer_class(config, i, dtype) for i in range(n)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)


class LlamaForCausalLM(nnx.Module):
    """Llama-family causal LM; ``__call__`` returns final-norm hidden states and the cache."""

    layer_class = LlamaDecoderLayer  # the decoder block, overridden by the variants

    def __init__(self, config, dtype):
        self.model = LlamaModel(config, dtype, self.layer_class)
        tied = getattr(config, "tie_word_embeddings", False)
        self.lm_head = None if tied else Linear(config.hidden_size, config.vocab_size, False, dtype)
        # a constant, not a parameter: a tuple of floats is static (part of the graph definition)
        self.inv_freq = tuple(float(f) for f in rope_inverse_frequencies(config, head_dim(config)))
        self.windows = tuple(layer_windows(config))

    def layer_specs(self) -> list[dict]:
        """What differs between layers (:func:`lm_inference.models.layers.run_layers`)."""
        return [{"window": w} for w in self.windows]

    def __call__(self, tokens: Array, positions: Array, layers: dict, valid: Array, start):
        x = self.model.embed_tokens(tokens)
        inv_freq = jnp.asarray(self.inv_freq, jnp.float32)

        def step(layer, x, kv, i, spec):
            return layer(x, positions, inv_freq, kv, valid, start, i, spec)

        x, kv = run_layers(self.model.layers, x, layers, self.layer_specs(), step)
        return self.model.norm(x), kv

    def unembed(self, hidden: Array) -> Array:
        """Next-token logits from final hidden states."""
        if self.lm_head is None:
            return self.model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)


ARCHITECTURES = {
    "llama": Architecture(LlamaForCausalLM, "Llama 2/3, SmolLM", decoder_dims),
    "mistral": Architecture(LlamaForCausalLM, "Mistral", decoder_dims),
    "qwen2": Architecture(LlamaForCausalLM, "Qwen2", decoder_dims),
}
