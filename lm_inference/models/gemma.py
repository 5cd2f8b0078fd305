r"""Gemma 2 and Gemma 3 (text only, ``Gemma3ForCausalLM``) as one flax nnx module.

Shared by both: embeddings scaled by ``sqrt(hidden_size)`` (the factor rounded to the parameter
dtype first), RMSNorm ``x / sqrt(mean(x^2) + eps) * (1 + w)`` in float32, rotary position
embeddings, grouped-query attention with scale ``query_pre_attn_scalar^{-1/2}``, GeGLU MLP
``down(act(gate(x)) * up(x))`` with ``hidden_activation``, four norms per layer

    x = x + post_attention_layernorm(attn(input_layernorm(x)))
    x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))

sliding (``sliding_window``) and global layers as ``layer_types`` marks them, and final logit
soft-capping ``c tanh(logits / c)`` with ``c = final_logit_softcapping`` (when set). The head is
tied to the embeddings unless ``tie_word_embeddings`` is false. The two differ in:

| model_type | attention soft-capping | q/k norms | rope |
|---|---|---|---|
| gemma2 | ``c tanh(s / c)`` on the scores, ``c = attn_logit_softcapping`` | no | one ``rope_parameters`` for every layer |
| gemma3_text | none (transformers ignores ``attn_logit_softcapping``) | ``(1 + w)`` RMSNorm per head on q and k, before rope | ``rope_parameters[layer_type]``: local base for sliding layers, global base and scaling (e.g. ``linear``) for full ones |

Bidirectional attention (``use_bidirectional_attention``) is not supported.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kernels.types import Array
from lm_inference.models import Architecture, decoder_dims
from lm_inference.models.layers import (
    Embedding,
    Linear,
    activation,
    apply_rope,
    attend,
    attention_mask,
    mix,
    rope_inverse_frequencies,
    run_layers,
    scores,
    write_kv,
)

__all__ = [
    "GemmaForCausalLM",
    "GemmaRMSNorm",
    "softcap",
    "embed_scale",
    "attend_softcapped",
    "layer_windows",
    "layer_inv_freqs",
    "ARCHITECTURES",
]

_LAYER_TYPES = ("sliding_attention", "full_attention")


class GemmaRMSNorm(nnx.Module):
    """``x / sqrt(mean(x^2) + eps) * (1 + w)`` entirely in float32, cast back to ``x``'s dtype.

    (Llama's RMSNorm casts before multiplying by ``w``; Gemma multiplies first.) ``w`` is stored
    zero-centred, as in the checkpoints.
    """

    def __init__(self, dim: int, eps: float, dtype):
        self.weight = nnx.Param(jnp.zeros((dim,), dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)


def embed_scale(hidden_size: int, dtype) -> Array:
    """``sqrt(hidden_size)`` as float32 rounded to ``dtype`` (as transformers does: in bfloat16
    ``sqrt(3072) = 55.43`` becomes ``55.5``)."""
    return jnp.asarray(np.float32(hidden_size**0.5)).astype(dtype)


def softcap(x: Array, cap: float | None) -> Array:
    """``cap * tanh(x / cap)`` (identity when ``cap`` is ``None``)."""
    return x if cap is None else cap * jnp.tanh(x / cap)


def attend_softcapped(
    q: Array, k, v, mask: Array, scale: float, cap: float | None
) -> Array:
    """``softmax(mask(cap tanh(scale q k^T / cap))) v`` in float32; :func:`layers.attend` when
    ``cap`` is ``None``. Shapes as in :func:`lm_inference.models.layers.attend`."""
    if cap is None:
        return attend(q, k, v, mask, scale)
    s = scores(q, k) * scale
    s = jnp.where(mask[:, None, None], softcap(s, cap), jnp.finfo(jnp.float32).min)
    return mix(jax.nn.softmax(s, axis=-1), v)


def _check(config) -> None:
    if getattr(config, "use_bidirectional_attention", False):
        raise NotImplementedError(
            f"{config.model_type} with use_bidirectional_attention=True (an encoder-style mask) "
            "is not supported; only causal decoding is."
        )
    unknown = sorted(set(config.layer_types) - set(_LAYER_TYPES))
    if unknown:
        raise NotImplementedError(
            f"{config.model_type} layer types {unknown} are not supported; supported: "
            f"{list(_LAYER_TYPES)}."
        )


def layer_windows(config) -> list[int | None]:
    """Per layer: ``sliding_window`` for ``sliding_attention`` layers, ``None`` (global) otherwise."""
    window = getattr(config, "sliding_window", None)
    return [window if t == "sliding_attention" else None for t in config.layer_types]


def _rope_parameters(config, layer_type: str) -> dict:
    """Gemma 3's rope parameters of one layer type: transformers 5 keys ``rope_parameters`` by
    layer type; older configs give ``rope_theta`` / ``rope_scaling`` (global layers) and
    ``rope_local_base_freq`` (sliding layers)."""
    params = getattr(config, "rope_parameters", None) or {}
    if layer_type in params:
        return dict(params[layer_type])
    if layer_type == "sliding_attention":
        return {"rope_type": "default", "rope_theta": getattr(config, "rope_local_base_freq", 1e4)}
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    return {"rope_type": "default", "rope_theta": getattr(config, "rope_theta", 1e6), **scaling}


def layer_inv_freqs(config) -> list[np.ndarray]:
    """RoPE inverse frequencies of every layer (:func:`layers.rope_inverse_frequencies`)."""
    d = config.head_dim
    if config.model_type == "gemma2":
        inv = rope_inverse_frequencies(config, d)
        return [inv] * config.num_hidden_layers
    by_type = {
        t: rope_inverse_frequencies(SimpleNamespace(rope_parameters=_rope_parameters(config, t)), d)
        for t in set(config.layer_types)
    }
    return [by_type[t] for t in config.layer_types]


class GemmaAttention(nnx.Module):
    """Attention over layer ``layer`` of the cache with ``spec["window"]`` and rope tables
    ``spec["inv_freq"]`` (:func:`layer_windows`, :func:`layer_inv_freqs`)."""

    def __init__(self, config, dtype):
        h, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv = config.num_attention_heads, config.num_key_value_heads
        bias = bool(getattr(config, "attention_bias", False))
        self.q_proj = Linear(h, self.num_heads * d, bias, dtype)
        self.k_proj = Linear(h, self.num_kv * d, bias, dtype)
        self.v_proj = Linear(h, self.num_kv * d, bias, dtype)
        self.o_proj = Linear(self.num_heads * d, h, bias, dtype)
        gemma3 = config.model_type == "gemma3_text"
        self.q_norm = GemmaRMSNorm(d, config.rms_norm_eps, dtype) if gemma3 else None
        self.k_norm = GemmaRMSNorm(d, config.rms_norm_eps, dtype) if gemma3 else None
        self.cap = None if gemma3 else config.attn_logit_softcapping
        self.scale = float(config.query_pre_attn_scalar) ** -0.5

    def __call__(self, x, positions, cache, valid, start, layer, spec):
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, -1)
        k = self.k_proj(x).reshape(b, t, self.num_kv, -1)
        v = self.v_proj(x).reshape(b, t, self.num_kv, -1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        inv_freq = jnp.asarray(spec["inv_freq"], jnp.float32)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        cache, keys, values = write_kv(cache, layer, k, v, start)
        mask = attention_mask(valid, start + jnp.arange(t), spec["window"])
        o = attend_softcapped(q, keys, values, mask, self.scale, self.cap)
        return self.o_proj(o), cache


class GemmaMLP(nnx.Module):
    def __init__(self, config, dtype):
        h, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = Linear(h, inner, False, dtype)
        self.up_proj = Linear(h, inner, False, dtype)
        self.down_proj = Linear(inner, h, False, dtype)
        name = getattr(config, "hidden_activation", None) or config.hidden_act
        self.act = activation(name)

    def __call__(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class GemmaDecoderLayer(nnx.Module):
    def __init__(self, config, dtype):
        h, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(h, eps, dtype)
        self.self_attn = GemmaAttention(config, dtype)
        self.post_attention_layernorm = GemmaRMSNorm(h, eps, dtype)
        self.pre_feedforward_layernorm = GemmaRMSNorm(h, eps, dtype)
        self.mlp = GemmaMLP(config, dtype)
        self.post_feedforward_layernorm = GemmaRMSNorm(h, eps, dtype)

    def __call__(self, x, positions, cache, valid, start, layer, spec):
        h = self.input_layernorm(x)
        a, cache = self.self_attn(h, positions, cache, valid, start, layer, spec)
        x = x + self.post_attention_layernorm(a)
        m = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(m), cache


class GemmaModel(nnx.Module):
    def __init__(self, config, dtype):
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype)
        n = config.num_hidden_layers
        self.layers = nnx.List([GemmaDecoderLayer(config, dtype) for _ in range(n)])
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.hidden_size = config.hidden_size


class GemmaForCausalLM(nnx.Module):
    """Gemma 2 / Gemma 3 text causal LM; ``__call__`` returns final-norm hidden states and the
    cache, :meth:`unembed` the soft-capped logits."""

    def __init__(self, config, dtype):
        _check(config)
        self.model = GemmaModel(config, dtype)
        tied = getattr(config, "tie_word_embeddings", True)
        self.lm_head = None if tied else Linear(config.hidden_size, config.vocab_size, False, dtype)
        self.final_cap = getattr(config, "final_logit_softcapping", None)
        # constants, not parameters: tuples are static (part of the graph definition)
        self.windows = tuple(layer_windows(config))
        self.inv_freqs = tuple(tuple(float(f) for f in inv) for inv in layer_inv_freqs(config))

    def layer_specs(self) -> list[dict]:
        """What differs between layers (:func:`lm_inference.models.layers.run_layers`)."""
        return [
            {"window": w, "inv_freq": f} for w, f in zip(self.windows, self.inv_freqs, strict=True)
        ]

    def __call__(self, tokens: Array, positions: Array, layers: dict, valid: Array, start):
        x = self.model.embed_tokens(tokens)
        x = x * embed_scale(self.model.hidden_size, x.dtype)

        def step(layer, x, kv, i, spec):
            return layer(x, positions, kv, valid, start, i, spec)

        x, kv = run_layers(self.model.layers, x, layers, self.layer_specs(), step)
        return self.model.norm(x), kv

    def unembed(self, hidden: Array) -> Array:
        """Next-token logits ``c tanh((h E^T) / c)`` (``c = final_logit_softcapping``)."""
        if self.lm_head is None:
            logits = self.model.embed_tokens.attend(hidden)
        else:
            logits = self.lm_head(hidden)
        return softcap(logits, self.final_cap)


ARCHITECTURES = {
    "gemma2": Architecture(GemmaForCausalLM, "Gemma 2", decoder_dims),
    "gemma3_text": Architecture(
        GemmaForCausalLM, "Gemma 3 (text, Gemma3ForCausalLM)", decoder_dims
    ),
}
