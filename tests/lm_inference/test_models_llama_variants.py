"""Parity of the Llama-derived architectures (Qwen3, OLMo 2, SmolLM3) with transformers' torch
implementations, incremental decoding, and the cache gather (tolerances of :mod:`._hf`)."""

import jax.numpy as jnp
import pytest

from lm_inference.models import SUPPORTED_ARCHITECTURES, module_class
from tests.lm_inference._hf import (
    V,
    assert_cache_gather,
    assert_incremental_decoding,
    assert_logits_match,
)

T = pytest.importorskip("transformers")

_BASE = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=40,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention in every config
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=None,
)


def qwen3():
    """head_dim 16 != 32 / 4, q/k/v/o biases, tied head, sliding window (5) on layer 1."""
    return T.Qwen3Config(
        **_BASE,
        num_hidden_layers=2,
        head_dim=16,
        attention_bias=True,
        tie_word_embeddings=True,
        use_sliding_window=True,
        sliding_window=5,
        max_window_layers=1,
    )


def olmo2():
    """Post-norms and full-width q/k norms, untied head."""
    return T.Olmo2Config(**_BASE, num_hidden_layers=2)


def smollm3():
    """Layers 0, 2 with rope, layer 1 without (interval 2), sliding window (5) on the no-rope one."""
    return T.SmolLM3Config(
        **_BASE,
        num_hidden_layers=3,
        no_rope_layer_interval=2,
        use_sliding_window=True,
        sliding_window=5,
    )


FACTORIES = {"qwen3": qwen3, "olmo2": olmo2, "smollm3": smollm3}


def test_configs_exercise_the_variants():
    assert qwen3().head_dim * 4 != 32 and qwen3().layer_types[1] == "sliding_attention"
    cfg = smollm3()
    assert cfg.no_rope_layers == [1, 0, 1]
    assert cfg.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    assert set(FACTORIES) <= set(SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_logits_match_transformers_with_left_padding(name):
    assert_logits_match(name, FACTORIES[name])


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_incremental_decoding_equals_full_forward(name):
    assert_incremental_decoding(name, FACTORIES[name])


def test_cache_gather_equals_decoding_permuted_sequences():
    """Reordering the cache after a resampling == decoding the permuted rows (SmolLM3: rope,
    no-rope and sliding layers)."""
    assert_cache_gather("smollm3", smollm3)


def test_unsupported_rope_type_is_named():
    cfg = qwen3()
    cfg.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    with pytest.raises(NotImplementedError, match="yarn"):
        module_class(cfg)(cfg, jnp.float32)
