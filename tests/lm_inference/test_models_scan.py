"""The decoder layers under ``lax.scan`` (:func:`lm_inference.models.layers.run_layers`).

Four-layer random-weight models whose layers differ (sliding and global windows, rope and no-rope
layers, per-layer rope bases, per-layer attention scales): the scanned forward pass and KV-cached
decoding equal the unrolled ones (``SCAN_LAYERS = False``), the scan is really taken (one scan of
length ``L``), and the traced program holds one copy of the layer whatever the depth. Parity of
the scanned models with transformers is in the other ``test_models*`` modules (scan is the
default).

Tolerance: the two programs evaluate the same float32 operations in the same order per layer (XLA
may fuse them differently), so logits agree to ``1e-5 * max(1, max |logit|)``, ten times tighter
than the transformers parity bound; observed differences are ~1e-7 (float32 rounding).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_inference.loading import CausalLM
from lm_inference.models import layers, module_class

T = pytest.importorskip("transformers")

V = 48
_BASE = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
_GEMMA = dict(_BASE, head_dim=16, query_pre_attn_scalar=24)


def _configs():
    return {
        # sliding window on layers >= 2 only
        "qwen2": T.Qwen2Config(
            **_BASE, use_sliding_window=True, sliding_window=5, max_window_layers=2
        ),
        "mistral": T.MistralConfig(**_BASE, sliding_window=5),
        "qwen3": T.Qwen3Config(
            **_BASE, head_dim=16, use_sliding_window=True, sliding_window=5, max_window_layers=1
        ),
        "olmo2": T.Olmo2Config(**_BASE),
        # rope on layers 0, 2; none (and a sliding window) on 1, 3
        "smollm3": T.SmolLM3Config(
            **_BASE, no_rope_layer_interval=2, use_sliding_window=True, sliding_window=5
        ),
        "gemma2": T.Gemma2Config(**_GEMMA, sliding_window=4, attn_logit_softcapping=5.0),
        # local rope base 10 on sliding layers, base 1000 with linear scaling on global ones
        "gemma3": T.Gemma3TextConfig(
            **_GEMMA,
            sliding_window=5,
            layer_types=["sliding_attention", "full_attention"] * 2,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1000.0, "factor": 4.0},
            },
        ),
        "phi3": T.Phi3Config(**_BASE, partial_rotary_factor=0.5, sliding_window=5),
        "gpt_neox": T.GPTNeoXConfig(  # no grouped-query attention in GPT-NeoX
            **{k: v for k, v in _BASE.items() if k != "num_key_value_heads"},
            rotary_pct=0.25,
            use_parallel_residual=True,
        ),
        # attention scaled by 1 / (layer + 1)
        "gpt2": T.GPT2Config(
            vocab_size=V,
            n_embd=32,
            n_layer=4,
            n_head=4,
            n_positions=64,
            scale_attn_by_inverse_layer_idx=True,
        ),
        "gpt_neo": T.GPTNeoConfig(
            vocab_size=V,
            hidden_size=32,
            num_layers=4,
            num_heads=4,
            max_position_embeddings=64,
            attention_types=[[["global", "local"], 2]],
            window_size=4,
        ),
    }


CONFIGS = _configs()


def _lm(config, seed: int = 0) -> CausalLM:
    """A random-weight model (weights ~ N(0, 0.2^2))."""
    lm = CausalLM(module_class(config)(config, jnp.float32), config)
    leaves, treedef = jax.tree.flatten(lm.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    lm.params = jax.tree.unflatten(
        treedef,
        [0.2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)],
    )
    return lm


def _batch():
    """Left-padded ``[3, 10]`` ids (rows of 10, 7 and 4 real tokens)."""
    ids = np.asarray(jax.random.randint(jax.random.key(1), (3, 10), 0, V), np.int32)
    mask = np.ones((3, 10), np.int32)
    mask[1, :3] = 0
    mask[2, :6] = 0
    return jnp.asarray(ids), jnp.asarray(mask)


def _decode(lm, ids, mask, steps: int = 4) -> np.ndarray:
    """Prefill then ``steps`` fed-back greedy tokens: the logits ``[steps + 1, B, V]``."""
    out, cache = jax.jit(lm.prefill, static_argnums=3)(lm.params, ids, mask, 10 + steps)
    step = jax.jit(lm.decode_step)
    logits = [out.logits]
    for _ in range(steps):
        out, cache = step(lm.params, jnp.argmax(out.logits, -1).astype(jnp.int32), cache)
        logits.append(out.logits)
    return np.asarray(jnp.stack(logits))


def _eqns(jaxpr):
    """Every equation of a jaxpr, nested ones (scan bodies, pjit calls) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            for sub in p if isinstance(p, list | tuple) else [p]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _eqns(sub)


def _jaxpr(lm, ids, mask):
    return jax.make_jaxpr(lm._full_logits)(lm.params, ids, mask).jaxpr


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scan_equals_unrolled(name, monkeypatch):
    config = CONFIGS[name]
    ids, mask = _batch()
    scanned = _lm(config)
    scans = [e for e in _eqns(_jaxpr(scanned, ids, mask)) if e.primitive.name == "scan"]
    assert [e.params["length"] for e in scans] == [4], "the layers do not run under one scan"
    full, decoded = np.asarray(scanned.logits(ids, mask)), _decode(scanned, ids, mask)

    monkeypatch.setattr(layers, "SCAN_LAYERS", False)
    unrolled = _lm(config)  # same weights; a fresh instance, so a fresh trace
    assert not [e for e in _eqns(_jaxpr(unrolled, ids, mask)) if e.primitive.name == "scan"]
    real = np.asarray(mask, bool)
    _close(full[real], np.asarray(unrolled.logits(ids, mask))[real])
    _close(decoded, _decode(unrolled, ids, mask))


@pytest.mark.parametrize("name", ["mistral", "gpt2", "gemma3"])
def test_traced_program_does_not_grow_with_depth(name, monkeypatch):
    """Matrix products in the traced forward pass: constant in ``L`` under scan, ``L`` times the
    layer's count unrolled (the unembedding adds one)."""
    ids, mask = _batch()
    base = CONFIGS[name].to_dict()
    key = "n_layer" if name == "gpt2" else "num_hidden_layers"

    def dots(n: int) -> int:
        extra = {key: n}
        if name == "gemma3":
            extra["layer_types"] = ["sliding_attention", "full_attention"] * (n // 2)
        if name == "gpt2":  # GPT-2's config has no num_hidden_layers attribute to override
            config = T.GPT2Config(**{**base, **extra})
        else:
            config = type(CONFIGS[name])(**{**base, **extra})
        return sum(e.primitive.name == "dot_general" for e in _eqns(_jaxpr(_lm(config), ids, mask)))

    assert dots(2) == dots(8)
    monkeypatch.setattr(layers, "SCAN_LAYERS", False)
    d2, d8 = dots(2), dots(8)
    assert d8 - 1 == 4 * (d2 - 1)
