r"""Building blocks shared by the causal LM architectures, with a static-shape KV cache.

Parameters are stored in Hugging Face's layouts and under Hugging Face's names (a ``Linear`` holds
``weight [out, in]``, GPT-2's ``Conv1D`` holds ``weight [in, out]``), so a checkpoint maps onto a
module's state by name alone, with no transposes (:mod:`lm_inference.loading`).

The cache of a batch of ``B`` rows with room for ``S`` positions is a dict whose every leaf has
the batch axis first (so reordering particles is one gather, :func:`lm_inference.base.reorder_cache`;
a shared prompt, below, is the exception):

- ``layers``: ``{"k", "v"}``, every layer's keys and values stacked, ``[B, L, H_kv, S, D]``
  (slots next to head dims, so a decode step's ``q k^T`` and ``p v`` read each head's keys as
  one contiguous ``[S, D]`` matrix, with no transpose of the cache per layer and step);
- ``valid``: ``[B, S]`` which slots hold a real (non-padding) token;
- ``index``: ``[B]`` the next slot to write (equal across rows: prompts are left-padded);
- ``position``: ``[B]`` the next position id (real tokens so far, as ``generate`` counts them).

Attention of a query in slot ``i`` sees slot ``j`` when ``valid[j]``, ``j <= i`` and, for
windowed (local / sliding) layers, ``j > i - window``.

A cache may also hold a *shared prompt* (:meth:`lm_inference.CausalLM.broadcast_state`):
``prefix = {"k", "v": [1, L, H_kv, P, D], "valid": [1, P]}``, one copy attended by every row,
and ``layers`` only the ``S`` generated slots. Slots are then numbered ``0 .. P - 1`` (prompt)
then ``P .. P + S - 1`` (generated) for the masks; :func:`write_kv` writes generated slot
``start - P`` and returns the layer's keys as the pair ``(prompt [1, H_kv, P, D], generated
[B, H_kv, S, D])``, which :func:`attend` takes as the concatenation without building it.

The ``L`` decoder layers run under one ``jax.lax.scan`` (:func:`run_layers`), so the compiled
program holds one layer body whatever the depth: the layers' parameters (stored per layer under
Hugging Face's names) are stacked along a leading axis at trace time, and what differs between
layers (window, rope tables, rope on/off, attention scale) is a per-layer *spec* scanned with them.

Every matrix product accumulates in float32 (``preferred_element_type``) and casts back to the
activations' dtype: with bfloat16 weights that is both the accurate product and, on CPUs with
AMX and on GPUs, the fast one (a bfloat16-output dot is upcast to float32 by XLA's CPU backend,
and measured 3-4x slower than the float32-accumulating one on this Sapphire Rapids CPU).
The output projection returns float32 logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    "scores",
    "mix",
    "rope_inverse_frequencies",
    "apply_rope",
    "new_cache",
    "write_kv",
    "run_layers",
    "stack_specs",
    "SCAN_LAYERS",
    "use_scan",
    "NO_WINDOW",
]

SCAN_LAYERS: bool | None = None
"""Run the decoder layers under ``jax.lax.scan`` (``True``), as a Python loop with one copy of the
layer per depth in the compiled program (``False``), or ``None`` (default): scan, except for
half-precision (bfloat16 / float16) activations on the CPU backend, where XLA's CPU matrix
products on a layer's weights sliced out of the stacked array run about 10x slower than on
separate arrays (measured 46 against 459 GFLOP/s for a ``[64, 768] x [768, 3072]`` bfloat16 product
on one Sapphire Rapids core; float32: 89 against 130). Read at trace time."""


def use_scan(dtype) -> bool:
    """Whether :func:`run_layers` scans, for activations of ``dtype`` (see :data:`SCAN_LAYERS`)."""
    if SCAN_LAYERS is not None:
        return bool(SCAN_LAYERS)
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return not (half and jax.default_backend() == "cpu")


NO_WINDOW = 2**30
"""The window a global layer's spec holds once specs are arrays (``None`` before)."""


def _zeros(shape, dtype):
    # parameters are overwritten by the checkpoint; zeros keep construction cheap and deterministic
    return nnx.Param(jnp.zeros(shape, dtype))


class Linear(nnx.Module):
    """``y = x W^T + b`` with ``W`` of shape ``[out, in]`` (``torch.nn.Linear``'s layout)."""

    def __init__(self, d_in: int, d_out: int, bias: bool, dtype):
        self.weight = _zeros((d_out, d_in), dtype)
        self.bias = _zeros((d_out,), dtype) if bias else None

    def __call__(self, x: Array) -> Array:
        y = jnp.einsum("...i,oi->...o", x, self.weight[...], preferred_element_type=jnp.float32)
        return (y if self.bias is None else y + self.bias[...]).astype(x.dtype)


class Conv1D(nnx.Module):
    """``y = x W + b`` with ``W`` of shape ``[in, out]`` (GPT-2's ``Conv1D`` layout)."""

    def __init__(self, d_in: int, d_out: int, dtype):
        self.weight = _zeros((d_in, d_out), dtype)
        self.bias = _zeros((d_out,), dtype)

    def __call__(self, x: Array) -> Array:
        y = jnp.matmul(x, self.weight[...], preferred_element_type=jnp.float32)
        return (y + self.bias[...]).astype(x.dtype)


class Embedding(nnx.Module):
    """A ``[num, dim]`` table; :meth:`attend` is the tied output projection ``x E^T``."""

    def __init__(self, num: int, dim: int, dtype):
        self.weight = _zeros((num, dim), dtype)

    def __call__(self, ids: Array) -> Array:
        return jnp.take(self.weight[...], ids, axis=0)

    def attend(self, x: Array) -> Array:
        # float32 logits (accumulated in float32 whatever the weights' dtype)
        return jnp.einsum("...h,vh->...v", x, self.weight[...], preferred_element_type=jnp.float32)


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


def attention_mask(valid: Array, query_slots: Array, window: int | Array | None) -> Array:
    """``[B, Tq, S]`` boolean mask for queries in ``query_slots [Tq]`` over a cache with ``valid [B, S]``
    (``window`` may be traced: a scanned layer's spec)."""
    slots = jnp.arange(valid.shape[1])
    q = query_slots[:, None]
    mask = valid[:, None, :] & (slots[None, None, :] <= q[None])
    if window is not None:
        mask = mask & (slots[None, None, :] > q[None] - window)
    return mask


def scores(q: Array, k) -> Array:
    """``q k^T`` in float32: ``q [B, Tq, H, D]``, ``k [B, H_kv, S, D]`` or a shared-prompt pair
    ``(k_prompt [1, H_kv, P, D], k_generated [B, H_kv, S, D])`` (module docstring), giving
    ``[B, H_kv, H / H_kv, Tq, S]`` (``P + S`` slots for a pair)."""
    b, tq, h, d = q.shape
    parts = k if isinstance(k, tuple) else (k,)
    hkv = parts[-1].shape[1]
    q = q.reshape(b, tq, hkv, h // hkv, d)
    out = []
    for part in parts:
        if part.shape[0] == 1 and b != 1:  # the shared prompt: one copy for every row
            out.append(jnp.einsum("btkgd,ksd->bkgts", q, part[0], preferred_element_type=jnp.float32))
        else:
            out.append(jnp.einsum("btkgd,bksd->bkgts", q, part, preferred_element_type=jnp.float32))
    return out[0] if len(out) == 1 else jnp.concatenate(out, axis=-1)


def mix(p: Array, v) -> Array:
    """``p v`` for probabilities ``p [B, H_kv, G, Tq, S]`` and values as in :func:`scores`,
    returning ``[B, Tq, H * D]``."""
    parts = v if isinstance(v, tuple) else (v,)
    b, _, _, tq, _ = p.shape
    o, at = 0.0, 0
    for part in parts:
        n = part.shape[2]
        w = p[..., at : at + n].astype(part.dtype)
        at += n
        if part.shape[0] == 1 and b != 1:
            o = o + jnp.einsum("bkgts,ksd->bkgtd", w, part[0], preferred_element_type=jnp.float32)
        else:
            o = o + jnp.einsum("bkgts,bksd->bkgtd", w, part, preferred_element_type=jnp.float32)
    o = o.astype(parts[-1].dtype)
    return o.transpose(0, 3, 1, 2, 4).reshape(b, tq, -1)


def attend(q: Array, k, v, mask: Array, scale: float) -> Array:
    """Grouped-query attention ``softmax(scale q k^T + mask) v``, scores and softmax in float32.

    Args:
        q: ``[B, Tq, H, D]``; k, v: ``[B, H_kv, S, D]`` (the cache layout) with ``H`` a multiple of
            ``H_kv``, or shared-prompt pairs (:func:`scores`);
        mask: ``[B, Tq, S]`` (a fully masked row gives a uniform average, never NaN).

    Returns:
        ``[B, Tq, H * D]``.
    """
    s = scores(q, k) * scale
    s = jnp.where(mask[:, None, None], s, jnp.finfo(jnp.float32).min)
    return mix(jax.nn.softmax(s, axis=-1), v)


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
    zeros = jnp.zeros((batch, num_layers, num_kv_heads, length, head_dim), dtype)
    return {
        "layers": {"k": zeros, "v": zeros},
        "valid": jnp.zeros((batch, length), bool),
        "index": jnp.zeros((batch,), jnp.int32),
        "position": jnp.zeros((batch,), jnp.int32),
    }


def write_kv(
    kv: dict, layer: int | Array, k: Array, v: Array, start: int | Array
) -> tuple[dict, Array, Array]:
    """Write ``k, v [B, T, H_kv, D]`` into slots ``start .. start + T - 1`` of layer ``layer`` of
    ``kv`` (``{"k", "v"}`` of shape ``[B, L, H_kv, S, D]``); ``layer`` may be traced. With a shared
    prompt (``kv`` also holds ``prefix_k, prefix_v [1, L, H_kv, P, D]``), ``start`` counts the
    prompt's ``P`` slots first (module docstring).

    Returns:
        ``(kv, keys, values)``: the updated cache (only the ``T`` new slots written) and that
        layer's keys and values ``[B, H_kv, S, D]`` (pairs with a shared prompt).
    """
    p = kv["prefix_k"].shape[3] if "prefix_k" in kv else 0
    out, layer_kv = dict(kv), []
    for name, new in (("k", k), ("v", v)):
        full = jax.lax.dynamic_update_slice(
            kv[name],
            jnp.swapaxes(new, 1, 2)[:, None].astype(kv[name].dtype),
            (0, layer, 0, start - p, 0),
        )
        out[name] = full
        mine = jax.lax.dynamic_index_in_dim(full, layer, 1, keepdims=False)
        if p:
            shared = jax.lax.dynamic_index_in_dim(kv["prefix_" + name], layer, 1, keepdims=False)
            mine = (shared, mine)
        layer_kv.append(mine)
    return out, layer_kv[0], layer_kv[1]


def stack_specs(specs: list[dict]) -> dict:
    """Per-layer specs (dicts of Python values, one per layer) as arrays with a leading layer axis;
    ``None`` (a global layer's window) becomes :data:`NO_WINDOW`."""
    if not specs or not specs[0]:
        return {}
    out = {}
    for key in specs[0]:
        vals = [NO_WINDOW if s[key] is None else s[key] for s in specs]
        out[key] = jnp.asarray(np.asarray(vals, np.float32 if isinstance(vals[0], tuple) else None))
    return out


def run_layers(layers, x: Array, kv: dict, specs: list[dict], step: Callable) -> tuple:
    """``x, kv = step(layers[l], x, kv, l, specs[l])`` for ``l = 0 .. L - 1``.

    When :func:`use_scan` (by default), and when every layer has the same graph definition (per-layer
    differences live in ``specs``), one ``jax.lax.scan`` over the layers' states stacked along a
    leading axis, ``l`` and the specs (:func:`stack_specs`) scanned with them and ``(x, kv)`` the
    carry; otherwise a Python loop with ``l`` and the specs as Python values. Both compute the same
    function.

    Args:
        layers: the ``L`` decoder-layer modules; x: the hidden states; kv: the stacked cache
            ``{"k", "v"}`` (:func:`new_cache`); specs: ``L`` dicts with the same keys.
        step: ``(layer, x, kv, l, spec) -> (x, kv)``.
    """
    layers = list(layers)
    if len(specs) != len(layers):
        raise ValueError(f"{len(specs)} layer specs for {len(layers)} layers.")
    if use_scan(x.dtype) and len(layers) > 1:
        split = [nnx.split(layer) for layer in layers]
        graphdef = split[0][0]
        if all(g == graphdef for g, _ in split[1:]):
            stacked = jax.tree.map(lambda *a: jnp.stack(a), *(s for _, s in split))

            def body(carry, xs):
                i, state, spec = xs
                return step(nnx.merge(graphdef, state), *carry, i, spec), None

            xs = (jnp.arange(len(layers), dtype=jnp.int32), stacked, stack_specs(specs))
            (x, kv), _ = jax.lax.scan(body, (x, kv), xs)
            return x, kv
    for i, (layer, spec) in enumerate(zip(layers, specs, strict=True)):
        x, kv = step(layer, x, kv, i, spec)
    return x, kv
