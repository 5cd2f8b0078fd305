"""Parity of Gemma 2 and Gemma 3 (text) with transformers' own PyTorch implementations.

Tolerance and helpers as in ``test_models`` (:mod:`tests.lm_inference._hf`). The tiny configs make
every Gemma-specific term bind: soft-caps small enough that ``tanh`` saturates, windows crossed by
the 12- and 14-token sequences, ``head_dim`` (16) != hidden / heads (8), grouped-query attention,
``query_pre_attn_scalar`` != ``head_dim``, and for Gemma 3 distinct local and global rope bases
with linear scaling on the global layers.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.lm_inference._hf import (
    T,
    V,
    assert_incremental_decoding,
    assert_logits_match,
    checkpoint,
    left_padded_batch,
    torch,
    torch_logits,
)

_GEMMA = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=24,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=None,
)

_GEMMA3_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
    "full_attention": {"rope_type": "linear", "rope_theta": 1000.0, "factor": 4.0},
}


def gemma2() -> T.Gemma2Config:
    """Sliding layer 0 (window 4), global layer 1; attention and final soft-capping bind."""
    return T.Gemma2Config(
        **_GEMMA,
        sliding_window=4,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
    )


def gemma2_untied() -> T.Gemma2Config:
    """No soft-capping at all, an untied head and attention biases."""
    return T.Gemma2Config(
        **_GEMMA,
        sliding_window=5,
        attn_logit_softcapping=None,
        final_logit_softcapping=None,
        tie_word_embeddings=False,
        attention_bias=True,
    )


def gemma3() -> T.Gemma3TextConfig:
    """q/k norms, local rope base 10 on the sliding layer, base 1000 with linear scaling 4 on
    the global one, final soft-capping."""
    return T.Gemma3TextConfig(
        **_GEMMA,
        sliding_window=5,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={k: dict(v) for k, v in _GEMMA3_ROPE.items()},
        final_logit_softcapping=3.0,
    )


FACTORIES = {"gemma2": gemma2, "gemma2_untied": gemma2_untied, "gemma3": gemma3}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_logits_match_transformers_with_left_padding(name):
    lm, model = assert_logits_match(name, FACTORIES[name])
    if model.config.final_logit_softcapping is not None:
        # the cap binds: some logits are pushed close to it
        ids, mask = left_padded_batch()
        cap = model.config.final_logit_softcapping
        assert np.abs(torch_logits(model, ids, mask)).max() > 0.9 * cap


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_incremental_decoding_equals_full_forward(name):
    assert_incremental_decoding(name, FACTORIES[name])


def test_attention_softcap_binds():
    """The Gemma 2 tiny model's scaled scores exceed its cap, so tanh actually bends them."""
    _, model = checkpoint("gemma2", gemma2)
    attn = model.model.layers[0].self_attn
    x = torch.randn(1, 12, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q = attn.q_proj(model.model.layers[0].input_layernorm(x)).view(1, 12, 4, 16)
        k = attn.k_proj(model.model.layers[0].input_layernorm(x)).view(1, 12, 2, 16)
        s = torch.einsum("bthd,bshd->bhts", q[:, :, :2], k) * attn.scaling
    assert s.abs().max() > 2 * model.config.attn_logit_softcapping


def test_gemma3_rope_frequencies_match_transformers():
    """Per-layer-type inverse frequencies == transformers' rotary buffers, also from a legacy
    config (``rope_theta`` / ``rope_scaling`` / ``rope_local_base_freq``)."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    from lm_inference.models.gemma import layer_inv_freqs

    legacy = T.Gemma3TextConfig(
        **_GEMMA,
        layer_types=["sliding_attention", "full_attention"],
        rope_theta=1000.0,
        rope_local_base_freq=10.0,
        rope_scaling={"rope_type": "linear", "factor": 4.0},
    )
    for cfg in (gemma3(), legacy):
        ref = Gemma3RotaryEmbedding(cfg)
        ours = layer_inv_freqs(cfg)
        for layer_type, inv in zip(cfg.layer_types, ours, strict=True):
            want = getattr(ref, f"{layer_type}_inv_freq").numpy()
            np.testing.assert_allclose(inv, want, rtol=1e-6)
        assert not np.allclose(ours[0], ours[1])


def test_embed_scale_is_rounded_to_the_parameter_dtype():
    """sqrt(hidden) is rounded to bf16 as transformers' scaled embedding does (55.43 -> 55.5)."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    from lm_inference.models.gemma import embed_scale

    for hidden in (32, 3072):
        emb = Gemma3TextScaledWordEmbedding(2, hidden, None, embed_scale=hidden**0.5)
        emb = emb.to(torch.bfloat16)
        with torch.no_grad():
            want = emb(torch.tensor([0, 1])).float().numpy()
            table = jnp.asarray(emb.weight.float().numpy(), jnp.bfloat16)
        got = np.asarray((table * embed_scale(hidden, jnp.bfloat16)).astype(jnp.float32))
        np.testing.assert_array_equal(got, want)  # one bf16 rounding of the same product
    assert float(embed_scale(3072, jnp.bfloat16)) == 55.5
    assert float(embed_scale(3072, jnp.float32)) == pytest.approx(3072**0.5, rel=1e-7)


def test_bfloat16_weights_and_activations():
    """bf16 (the GPU default) runs end to end; logits track float32 to bf16 precision."""
    import lm_inference

    folder, model = checkpoint("gemma3", gemma3)
    lm = lm_inference.load(folder, dtype=jnp.bfloat16)
    ids, mask = left_padded_batch()
    real = mask.astype(bool)
    out = np.asarray(lm.logits(ids, mask))[real]
    ref = torch_logits(model, ids, mask)[real]
    assert np.all(np.isfinite(out))
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.99
    assert np.mean(out.argmax(-1) == ref.argmax(-1)) > 0.8


@pytest.mark.parametrize("factory", [gemma2, gemma3])
def test_bidirectional_attention_is_rejected(factory):
    from lm_inference.models.gemma import GemmaForCausalLM

    cfg = factory()
    cfg.use_bidirectional_attention = True
    with pytest.raises(NotImplementedError, match="use_bidirectional_attention"):
        GemmaForCausalLM(cfg, jnp.float32)
