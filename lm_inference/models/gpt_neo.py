"""GPT-Neo (``GPTNeoForCausalLM``, e.g. the TinyStories models) as a flax nnx module.

Like GPT-2 but with separate bias-free ``q/k/v`` projections, **unscaled** attention scores, and
layers alternating between global attention and local attention over the last ``window_size``
positions (``config.attention_layers``).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lm_inference.models import Architecture, Dims
from lm_inference.models.gpt2 import GPT2Block, GPT2LMHeadModel
from lm_inference.models.layers import (
    Embedding,
    LayerNorm,
    Linear,
    activation,
    attend,
    attention_mask,
    write_kv,
)

__all__ = ["GPTNeoForCausalLM", "layer_windows", "ARCHITECTURES"]


class GPTNeoSelfAttention(nnx.Module):
    def __init__(self, config, layer: int, dtype):
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.q_proj = Linear(h, h, False, dtype)
        self.k_proj = Linear(h, h, False, dtype)
        self.v_proj = Linear(h, h, False, dtype)
        self.out_proj = Linear(h, h, True, dtype)

    def __call__(self, x, cache, valid, start, layer, spec):
        b, t, _ = x.shape
        q, k, v = (
            p(x).reshape(b, t, self.num_heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        cache, keys, values = write_kv(cache, layer, k, v, start)
        mask = attention_mask(valid, start + jnp.arange(t), spec["window"])
        return self.out_proj(attend(q, keys, values, mask, 1.0)), cache


class GPTNeoAttention(nnx.Module):
    def __init__(self, config, layer: int, dtype):
        self.attention = GPTNeoSelfAttention(config, layer, dtype)

    def __call__(self, x, cache, valid, start, layer, spec):
        return self.attention(x, cache, valid, start, layer, spec)


class GPTNeoMLP(nnx.Module):
    def __init__(self, config, dtype):
        inner = config.intermediate_size or 4 * config.hidden_size
        self.c_fc = Linear(config.hidden_size, inner, True, dtype)
        self.c_proj = Linear(inner, config.hidden_size, True, dtype)
        self.act = activation(config.activation_function)

    def __call__(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPTNeoBlock(GPT2Block):
    def __init__(self, config, layer: int, dtype):
        eps = config.layer_norm_epsilon
        self.ln_1 = LayerNorm(config.hidden_size, eps, dtype)
        self.attn = GPTNeoAttention(config, layer, dtype)
        self.ln_2 = LayerNorm(config.hidden_size, eps, dtype)
        self.mlp = GPTNeoMLP(config, dtype)


class GPTNeoModel(nnx.Module):
    def __init__(self, config, dtype):
        self.wte = Embedding(config.vocab_size, config.hidden_size, dtype)
        self.wpe = Embedding(config.max_position_embeddings, config.hidden_size, dtype)
        self.h = nnx.List([GPTNeoBlock(config, i, dtype) for i in range(config.num_layers)])
        self.ln_f = LayerNorm(config.hidden_size, config.layer_norm_epsilon, dtype)


class GPTNeoForCausalLM(GPT2LMHeadModel):
    """GPT-Neo causal LM (GPT-2's forward pass and head over GPT-Neo's blocks)."""

    def __init__(self, config, dtype):
        self.transformer = GPTNeoModel(config, dtype)
        tied = getattr(config, "tie_word_embeddings", True)
        self.lm_head = None if tied else Linear(config.hidden_size, config.vocab_size, False, dtype)
        self.windows = tuple(layer_windows(config))

    def layer_specs(self) -> list[dict]:
        return [{"window": w} for w in self.windows]


def layer_windows(config) -> list[int | None]:
    """Per layer: ``window_size`` for ``local`` layers, ``None`` for ``global`` ones."""
    kinds = list(config.attention_layers)
    unknown = sorted(set(kinds) - {"global", "local"})
    if unknown:
        raise NotImplementedError(f"GPT-Neo attention types {unknown} are not supported.")
    return [config.window_size if k == "local" else None for k in kinds]


def _dims(config) -> Dims:
    h, n = config.hidden_size, config.num_heads
    return Dims(
        config.num_layers, n, n, h // n, h, config.vocab_size, config.max_position_embeddings
    )


RULES = (  # Linear weights [out, in]
    (r"\.(q_proj|k_proj|v_proj|c_fc)\.weight$", ("model", None)),
    (r"\.c_fc\.bias$", ("model",)),
    (r"\.(out_proj|c_proj)\.weight$", (None, "model")),
    (r"(wte|lm_head)\.weight$", ("model", None)),
)

ARCHITECTURES = {
    "gpt_neo": Architecture(GPTNeoForCausalLM, "GPT-Neo (TinyStories)", _dims, RULES)
}
