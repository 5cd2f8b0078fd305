r"""GPT-NeoX (``GPTNeoXForCausalLM``: Pythia, GPT-NeoX-20B) as a flax nnx module.

Pre-norm blocks with LayerNorm (with bias), rotary embeddings on the first
``partial_rotary_factor`` (``rotary_pct``) dims of each head, and a residual that is

- parallel (``use_parallel_residual``): ``x + attn(ln1(x)) + mlp(ln2(x))``;
- sequential otherwise: ``y = x + attn(ln1(x)); y + mlp(ln2(y))``.

The fused ``query_key_value`` projection is laid out per head: its output viewed as
``[H, 3, D]`` gives ``q, k, v`` (not ``[3, H, D]`` as GPT-2's ``c_attn``). Attention scores are
scaled by ``1 / sqrt(D)``; ``query_key_value`` and ``dense`` carry a bias when
``attention_bias``; the MLP is ``dense_4h_to_h(act(dense_h_to_4h(x)))`` with biases; the output
head ``embed_out`` is untied unless ``tie_word_embeddings``.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from kernels.types import Array
from lm_inference.models import Architecture, decoder_dims
from lm_inference.models.layers import (
    Embedding,
    LayerNorm,
    Linear,
    activation,
    apply_rope,
    attend,
    attention_mask,
    rope_inverse_frequencies,
    run_layers,
    write_kv,
)

__all__ = ["GPTNeoXForCausalLM", "ARCHITECTURES"]


def _head_dim(config) -> int:
    return config.hidden_size // config.num_attention_heads


class GPTNeoXAttention(nnx.Module):
    """``dense(attend(rope(q), rope(k), v))`` with ``query_key_value(x)`` viewed ``[H, 3, D]``."""

    def __init__(self, config, dtype):
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        bias = bool(getattr(config, "attention_bias", True))
        self.query_key_value = Linear(h, 3 * h, bias, dtype)
        self.dense = Linear(h, h, bias, dtype)
        self.scale = _head_dim(config) ** -0.5

    def __call__(self, x, positions, inv_freq, cache, valid, start, layer):
        b, t, _ = x.shape
        qkv = self.query_key_value(x).reshape(b, t, self.num_heads, 3, -1)
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        cache, keys, values = write_kv(cache, layer, k, v, start)
        mask = attention_mask(valid, start + jnp.arange(t), None)
        return self.dense(attend(q, keys, values, mask, self.scale)), cache


class GPTNeoXMLP(nnx.Module):
    """``dense_4h_to_h(act(dense_h_to_4h(x)))``."""

    def __init__(self, config, dtype):
        h, inner = config.hidden_size, config.intermediate_size
        self.dense_h_to_4h = Linear(h, inner, True, dtype)
        self.dense_4h_to_h = Linear(inner, h, True, dtype)
        self.act = activation(config.hidden_act)

    def __call__(self, x):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(x)))


class GPTNeoXLayer(nnx.Module):
    """Parallel ``x + attn(ln1(x)) + mlp(ln2(x))`` or sequential residual (module docstring)."""

    def __init__(self, config, dtype):
        h, eps = config.hidden_size, config.layer_norm_eps
        self.input_layernorm = LayerNorm(h, eps, dtype)
        self.post_attention_layernorm = LayerNorm(h, eps, dtype)
        self.attention = GPTNeoXAttention(config, dtype)
        self.mlp = GPTNeoXMLP(config, dtype)
        self.parallel = bool(config.use_parallel_residual)

    def __call__(self, x, positions, inv_freq, cache, valid, start, layer):
        h = self.input_layernorm(x)
        a, cache = self.attention(h, positions, inv_freq, cache, valid, start, layer)
        if self.parallel:
            return self.mlp(self.post_attention_layernorm(x)) + a + x, cache
        y = a + x
        return self.mlp(self.post_attention_layernorm(y)) + y, cache


class GPTNeoXModel(nnx.Module):
    def __init__(self, config, dtype):
        self.embed_in = Embedding(config.vocab_size, config.hidden_size, dtype)
        self.layers = nnx.List(
            [GPTNeoXLayer(config, dtype) for _ in range(config.num_hidden_layers)]
        )
        self.final_layer_norm = LayerNorm(config.hidden_size, config.layer_norm_eps, dtype)


class GPTNeoXForCausalLM(nnx.Module):
    """GPT-NeoX causal LM; ``__call__`` returns final-norm hidden states and the cache.

    The untied head is named ``embed_out`` as in the checkpoints (transformers 5 calls it
    ``lm_head`` in memory and writes ``embed_out`` back in ``save_pretrained``).
    """

    def __init__(self, config, dtype):
        self.gpt_neox = GPTNeoXModel(config, dtype)
        tied = getattr(config, "tie_word_embeddings", False)
        self.embed_out = (
            None if tied else Linear(config.hidden_size, config.vocab_size, False, dtype)
        )
        # a constant, not a parameter: a tuple of floats is static (part of the graph definition)
        freqs = rope_inverse_frequencies(config, _head_dim(config))
        self.inv_freq = tuple(float(f) for f in freqs)

    def __call__(self, tokens: Array, positions: Array, layers: dict, valid: Array, start):
        m = self.gpt_neox
        x = m.embed_in(tokens)
        inv_freq = jnp.asarray(self.inv_freq, jnp.float32)

        def step(layer, x, kv, i, spec):  # every layer alike: no per-layer spec
            return layer(x, positions, inv_freq, kv, valid, start, i)

        x, kv = run_layers(m.layers, x, layers, [{}] * len(m.layers), step)
        return m.final_layer_norm(x), kv

    def unembed(self, hidden: Array) -> Array:
        """Next-token logits from final hidden states."""
        if self.embed_out is None:
            return self.gpt_neox.embed_in.attend(hidden)
        return self.embed_out(hidden)


# query_key_value is fused per head ([H, 3, D] rows), so splitting its rows splits whole heads
RULES = (
    (r"\.(query_key_value|dense_h_to_4h)\.weight$", ("model", None)),
    (r"\.(query_key_value|dense_h_to_4h)\.bias$", ("model",)),
    (r"\.(attention\.dense|dense_4h_to_h)\.weight$", (None, "model")),
    (r"(embed_in|embed_out)\.weight$", ("model", None)),
)

ARCHITECTURES = {
    "gpt_neox": Architecture(GPTNeoXForCausalLM, "GPT-NeoX, Pythia", decoder_dims, RULES),
}
