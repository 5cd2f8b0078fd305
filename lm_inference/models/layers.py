r"""Building blocks shared by the causal LM architectures, with a static-shape KV cache.

Parameters are stored in Hugging Face's layouts and under Hugging Face's names (a ``Linear`` holds
``weight [out, in]``, GPT-2's ``Conv1D`` holds ``weight [in, out]``), so a checkpoint maps onto a
module's state by name alone, with no transposes (:mod:`lm_inference.loading`).

The cache of a batch of ``B`` rows with room for ``S`` positions is a dict whose every leaf has
the batch axis first (so reordering particles is one gather, :func:`lm_inference.base.reorder_cache`):

- ``layers``: per layer ``{"k", "v"}`` of shape ``[B, S, H_kv, D]``;
- ``valid``: ``[B, S]`` which slots hold a real (non-padding) token;
- ``index``: ``[B]`` the next slot to write (equal across rows: prompts are left-padded);
- ``position``: ``[B]`` the next position id (real tokens so far, as ``generate`` counts them).

Attention of a query in slot ``i`` sees slot ``j`` when ``valid[j]``, ``j <= i`` and, for
windowed (local / sliding) layers, ``j > i - window``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kernels.types import Array

__all__ = [
    "Linear",
    "Conv1D",
    "Embedding",
    "LayerNorm",
    "RMSNorm",
    "activation",
    "attention_mask",
    "attend",
    "rope_inverse_frequencies",
    "apply_rope",
    "new_cache",
    "write_kv",
]


def _zeros(shape, dtype):
    # parameters are overwritten by the checkpoint; zeros keep construction cheap and deterministic
    return nnx.Param(jnp.zeros(shape, dtype))


class Linear(nnx.Module):
    """``y = x W^T + b`` with ``W`` of shape ``[out, in]`` (``torch.nn.Linear``'s layout)."""

    def __init__(self, d_in: int, d_out: int, bias: bool, dtype):
        self.weight = _zeros((d_out, d_in), dtype)
        self.bias = _zeros((d_out,), dtype) if bias else None

    def __call__(self, x: Array) -> Array:
        y = jnp.einsum("...i,oi->...o", x, self.weight[...])
        return y if self.bias is None else y + self.bias[...]


class Conv1D(nnx.Module):
    """``y = x W + b`` with ``W`` of shape ``[in, out]`` (GPT-2's ``Conv1D`` layout)."""

    def __init__(self, d_in: int, d_out: int, dtype):
        self.weight = _zeros((d_in, d_out), dtype)
        self.bias = _zeros((d_out,), dtype)

    def __call__(self, x: Array) -> Array:
        return x @ self.weight[...] + self.bias[...]


class Embedding(nnx.Module):
    """A ``[num, dim]`` table; :meth:`attend` is the tied output projection ``x E^T``."""

    def __init__(self, num: int, dim: int, dtype):
        self.weight = _zeros((num, dim), dtype)

    def __call__(self, ids: Array) -> Array:
        return jnp.take(self.weight[...], ids, axis=0)

    def attend(self, x: Array) -> Array:
        return jnp.einsum("...h,vh->...v", x, self.weight[...])


class LayerNorm(nnx.Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias``, statistics in float32."""

    def __init__(self, dim: int, eps: float, dtype):
        self.weight = nnx.Param(jnp.ones((dim,), dtype))
        self.bias = _zeros((dim,), dtype)
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.weight[...].astype(jnp.float32) + self.bias[...]).astype(x.dtype)


class RMSNorm(nnx.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, statistics in float32 (Llama's ``LlamaRMSNorm``)."""

    def __init__(self, dim: int, eps: float, dtype):
        self.weight = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return self.weight[...] * y.astype(x.dtype)


def _gelu_new(x):
    return jax.nn.gelu(x, approximate=True)


_ACTIVATIONS = {
    "gelu_new": _gelu_new,
    "gelu_pytorch_tanh": _gelu_new,
    "gelu_fast": _gelu_new,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str):
    """The activation named by a Hugging Face config (``activation_function`` / ``hidden_act``)."""
    if name not in _ACTIVATIONS:
        raise NotImplementedError(
            f"activation {name!r} is not supported; supported: {sorted(_ACTIVATIONS)}."
        )
    return _ACTIVATIONS[name]


def attention_mask(valid: Array, query_slots: Array, window: int | None) -> Array:
    """``[B, Tq, S]`` boolean mask for queries in ``query_slots [Tq]`` over a cache with ``valid [B, S]``."""
    slots = jnp.arange(valid.shape[1])
    q = query_slots[:, None]
    mask = valid[:, None, :] & (slots[None, None, :] <= q[None])
    if window is not None:
        mask = mask & (slots[None, None, :] > q[None] - window)
    return mask


def attend(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """Grouped-query attention ``softmax(scale q k^T + mask) v``, scores and softmax in float32.

    Args:
        q: ``[B, Tq, H, D]``; k, v: ``[B, S, H_kv, D]`` with ``H`` a multiple of ``H_kv``;
        mask: ``[B, Tq, S]`` (a fully masked row gives a uniform average, never NaN).

    Returns:
        ``[B, Tq, H * D]``.
    """
    b, tq, h, d = q.shape
    hkv = k.shape[2]
    q = q.reshape(b, tq, hkv, h // hkv, d)
    s = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(mask[:, None, None], s, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    o = jnp.einsum("bkgts,bskd->btkgd", p, v)
    return o.reshape(b, tq, h * d)


def rope_inverse_frequencies(config, head_dim: int) -> np.ndarray:
    """RoPE inverse frequencies ``theta^{-2i/d}`` with the config's scaling (default, linear, llama3).

    Reads ``config.rope_parameters`` (transformers 5) or ``rope_theta`` / ``rope_scaling``
    (transformers 4 configs).
    """
    params = dict(getattr(config, "rope_parameters", None) or {})
    legacy = getattr(config, "rope_scaling", None) or {}
    params = {**legacy, **params}
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    dim = int(head_dim * float(params.get("partial_rotary_factor", 1.0)))
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    if rope_type == "default":
        return inv
    if rope_type == "linear":
        return inv / float(params["factor"])
    if rope_type == "llama3":
        factor = float(params["factor"])
        low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        old = float(params["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return np.where(medium, smoothed, scaled)
    raise NotImplementedError(
        f"rope type {rope_type!r} is not supported; supported: default, linear, llama3."
    )


def apply_rope(x: Array, positions: Array, inv_freq: Array, scale: float = 1.0) -> Array:
    """Rotate the first ``2 len(inv_freq)`` dims of ``x [B, T, H, D]`` by ``positions [B, T]``
    (half-split layout of ``rotate_half``), ``cos`` and ``sin`` times ``scale`` (longrope's
    attention factor); the other dims pass through (partial rotary)."""
    ang = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D_rot / 2]
    cos = jnp.concatenate([jnp.cos(ang)] * 2, -1)[:, :, None, :]
    sin = jnp.concatenate([jnp.sin(ang)] * 2, -1)[:, :, None, :]
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    rot = cos.shape[-1]
    xr, xp = x[..., :rot].astype(jnp.float32), x[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-xr[..., half:], xr[..., :half]], -1)
    out = (xr * cos + rotated * sin).astype(x.dtype)
    return jnp.concatenate([out, xp], -1) if xp.shape[-1] else out


def new_cache(
    batch: int, length: int, num_layers: int, num_kv_heads: int, head_dim: int, dtype
) -> dict:
    """An empty cache (module docstring) with room for ``length`` positions."""
    zeros = jnp.zeros((batch, length, num_kv_heads, head_dim), dtype)
    return {
        "layers": [{"k": zeros, "v": zeros} for _ in range(num_layers)],
        "valid": jnp.zeros((batch, length), bool),
        "index": jnp.zeros((batch,), jnp.int32),
        "position": jnp.zeros((batch,), jnp.int32),
    }


def write_kv(layer_cache: dict, k: Array, v: Array, start: Array) -> dict:
    """Write ``k, v [B, T, H_kv, D]`` into slots ``start .. start + T - 1`` of one layer's cache."""
    k = jax.lax.dynamic_update_slice_in_dim(
        layer_cache["k"], k.astype(layer_cache["k"].dtype), start, 1
    )
    v = jax.lax.dynamic_update_slice_in_dim(
        layer_cache["v"], v.astype(layer_cache["v"].dtype), start, 1
    )
    return {"k": k, "v": v}
