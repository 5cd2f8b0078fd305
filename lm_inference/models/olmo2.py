"""OLMo 2: the Llama block with its norms moved after attention and MLP, and q/k norms.

Per layer (no norm on the block's input)::

    x = x + post_attention_layernorm(attn(x))
    x = x + post_feedforward_layernorm(mlp(x))

with the queries and keys normalised over the whole projection before the split into heads and
rope::

    q = rope(q_norm(q_proj(x)) as [B, T, H, D])      q_norm: RMSNorm over H * D
    k = rope(k_norm(k_proj(x)) as [B, T, H_kv, D])   k_norm: RMSNorm over H_kv * D

Every RMSNorm (also the final ``model.norm``) multiplies by its weight in float32 before casting
back, ``(w * x / sqrt(mean(x^2) + eps))`` (Llama's casts first: equal in float32, not in bf16).
SwiGLU MLP without biases, ``attention_bias`` on q/k/v and o, full causal attention, untied head
unless ``tie_word_embeddings``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from kernels.types import Array
from lm_inference.models import Architecture, decoder_dims
from lm_inference.models.layers import RMSNorm
from lm_inference.models.llama import LlamaAttention, LlamaForCausalLM, LlamaMLP

__all__ = ["Olmo2ForCausalLM", "Olmo2Attention", "Olmo2RMSNorm", "ARCHITECTURES"]


class Olmo2RMSNorm(RMSNorm):
    """``(w * x / sqrt(mean(x^2) + eps))`` in float32, then cast to ``x``'s dtype."""

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return (self.weight[...].astype(jnp.float32) * y).astype(x.dtype)


class Olmo2Attention(LlamaAttention):
    """Llama attention with ``q_norm`` / ``k_norm`` over the full q / k projections, before rope."""

    def __init__(self, config, layer: int, dtype):
        super().__init__(config, layer, dtype)
        eps = config.rms_norm_eps
        self.q_norm = Olmo2RMSNorm(self.num_heads * self.head_dim, eps, dtype)
        self.k_norm = Olmo2RMSNorm(self.num_kv * self.head_dim, eps, dtype)

    def heads(self, x: Array) -> tuple[Array, Array, Array]:
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x)).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_norm(self.k_proj(x)).reshape(b, t, self.num_kv, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv, self.head_dim)
        return q, k, v


class Olmo2DecoderLayer(nnx.Module):
    """Post-norm block (module docstring): each sublayer's output is normalised, not its input."""

    def __init__(self, config, layer: int, dtype):
        eps = config.rms_norm_eps
        self.self_attn = Olmo2Attention(config, layer, dtype)
        self.post_attention_layernorm = Olmo2RMSNorm(config.hidden_size, eps, dtype)
        self.mlp = LlamaMLP(config, dtype)
        self.post_feedforward_layernorm = Olmo2RMSNorm(config.hidden_size, eps, dtype)

    def __call__(self, x, positions, inv_freq, cache, valid, start, layer, spec):
        a, cache = self.self_attn(x, positions, inv_freq, cache, valid, start, layer, spec)
        x = x + self.post_attention_layernorm(a)
        return x + self.post_feedforward_layernorm(self.mlp(x)), cache


class Olmo2ForCausalLM(LlamaForCausalLM):
    """OLMo 2 causal LM (``Olmo2ForCausalLM``)."""

    layer_class = Olmo2DecoderLayer

    def __init__(self, config, dtype):
        super().__init__(config, dtype)
        self.model.norm = Olmo2RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.windows = (None,) * config.num_hidden_layers  # full causal attention on every layer


ARCHITECTURES = {
    "olmo2": Architecture(Olmo2ForCausalLM, "OLMo 2", decoder_dims),
}
