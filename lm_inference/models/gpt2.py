"""GPT-2 (``GPT2LMHeadModel``) as a flax nnx module, parameters under Hugging Face's names.

Pre-norm transformer: ``h += attn(ln_1(h)); h += mlp(ln_2(h))``, learned absolute position
embeddings, fused ``c_attn`` projection (``Conv1D``, weights ``[in, out]``), attention scaled by
``1 / sqrt(d)`` (``scale_attn_weights``) and optionally ``1 / (layer + 1)``, tied output head.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from kernels.types import Array
from lm_inference.models import Architecture, Dims
from lm_inference.models.layers import (
    Conv1D,
    Embedding,
    LayerNorm,
    Linear,
    activation,
    attend,
    attention_mask,
    run_layers,
    write_kv,
)

__all__ = ["GPT2LMHeadModel", "attention_scales", "ARCHITECTURES"]


def attention_scales(config) -> list[float]:
    """Per layer: ``1 / sqrt(d)`` (``scale_attn_weights``) times ``1 / (layer + 1)``
    (``scale_attn_by_inverse_layer_idx``)."""
    d = config.n_embd // config.n_head
    base = d**-0.5 if config.scale_attn_weights else 1.0
    inverse = config.scale_attn_by_inverse_layer_idx
    return [base / (i + 1.0 if inverse else 1.0) for i in range(config.n_layer)]


class GPT2Attention(nnx.Module):
    """``c_proj(attend(q, k, v))`` over layer ``layer`` of the cache, scaled by ``spec["scale"]``."""

    def __init__(self, config, layer: int, dtype):
        h = config.n_embd
        self.num_heads = config.n_head
        self.c_attn = Conv1D(h, 3 * h, dtype)
        self.c_proj = Conv1D(h, h, dtype)

    def __call__(self, x, cache, valid, start, layer, spec):
        b, t, h = x.shape
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        q, k, v = (y.reshape(b, t, self.num_heads, -1) for y in (q, k, v))
        cache, keys, values = write_kv(cache, layer, k, v, start)
        mask = attention_mask(valid, start + jnp.arange(t), None)
        return self.c_proj(attend(q, keys, values, mask, spec["scale"])), cache


class GPT2MLP(nnx.Module):
    def __init__(self, config, dtype):
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(config.n_embd, inner, dtype)
        self.c_proj = Conv1D(inner, config.n_embd, dtype)
        self.act = activation(config.activation_function)

    def __call__(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nnx.Module):
    def __init__(self, config, layer: int, dtype):
        eps = config.layer_norm_epsilon
        self.ln_1 = LayerNorm(config.n_embd, eps, dtype)
        self.attn = GPT2Attention(config, layer, dtype)
        self.ln_2 = LayerNorm(config.n_embd, eps, dtype)
        self.mlp = GPT2MLP(config, dtype)

    def __call__(self, x, cache, valid, start, layer, spec):
        a, cache = self.attn(self.ln_1(x), cache, valid, start, layer, spec)
        x = x + a
        return x + self.mlp(self.ln_2(x)), cache


class GPT2Model(nnx.Module):
    def __init__(self, config, dtype):
        self.wte = Embedding(config.vocab_size, config.n_embd, dtype)
        self.wpe = Embedding(config.n_positions, config.n_embd, dtype)
        self.h = nnx.List([GPT2Block(config, i, dtype) for i in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon, dtype)


class GPT2LMHeadModel(nnx.Module):
    """GPT-2 causal LM; ``__call__`` returns the final-norm hidden states and the updated cache."""

    def __init__(self, config, dtype):
        self.transformer = GPT2Model(config, dtype)
        tied = getattr(config, "tie_word_embeddings", True)
        self.lm_head = None if tied else Linear(config.n_embd, config.vocab_size, False, dtype)
        self.scales = tuple(attention_scales(config))

    def layer_specs(self) -> list[dict]:
        """What differs between layers (:func:`lm_inference.models.layers.run_layers`)."""
        return [{"scale": s} for s in self.scales]

    def __call__(self, tokens: Array, positions: Array, layers: dict, valid: Array, start):
        m = self.transformer
        x = m.wte(tokens) + m.wpe(positions)

        def step(block, x, kv, i, spec):
            return block(x, kv, valid, start, i, spec)

        x, kv = run_layers(m.h, x, layers, self.layer_specs(), step)
        return m.ln_f(x), kv

    def unembed(self, hidden: Array) -> Array:
        """Next-token logits from final hidden states."""
        if self.lm_head is None:
            return self.transformer.wte.attend(hidden)
        return self.lm_head(hidden)


def _dims(config) -> Dims:
    h, n = config.n_embd, config.n_head
    return Dims(config.n_layer, n, n, h // n, h, config.vocab_size, config.n_positions)


# Conv1D weights are [in, out]; c_attn fuses q | k | v across all heads, so splitting its output
# would cut through the heads: it stays replicated and the heads are split after it
RULES = (
    (r"\.mlp\.c_fc\.weight$", (None, "model")),
    (r"\.mlp\.c_fc\.bias$", ("model",)),
    (r"\.(attn|mlp)\.c_proj\.weight$", ("model", None)),
    (r"(wte|lm_head)\.weight$", ("model", None)),
)

ARCHITECTURES = {"gpt2": Architecture(GPT2LMHeadModel, "GPT-2", _dims, RULES)}
