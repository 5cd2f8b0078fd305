"""Parity of Phi-3 and GPT-NeoX (Pythia) with transformers' own PyTorch implementations.

Same tolerance as :mod:`tests.lm_inference.test_models`: float32 logits agree to
``1e-4 * max(1, max |logit|)``.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import lm_inference
from tests.lm_inference._hf import (
    _LLAMA,
    T,
    V,
    _tol,
    assert_incremental_decoding,
    assert_logits_match,
    checkpoint,
    torch_logits,
)

_TINY = _LLAMA  # the shared tiny sizes (V = 48, hidden 32, 2 layers, 4 heads)


def phi3_longrope():
    """GQA (4 heads, 2 kv), rope on half of each head (2 frequencies), longrope with
    ``L0 = 8``: the 12- and 14-token sequences of the helpers use the long factors, and the
    attention factor is ``sqrt(1 + ln 8 / ln 8)``; untied head."""
    return T.Phi3Config(
        **_TINY,
        num_key_value_heads=2,
        partial_rotary_factor=0.5,
        original_max_position_embeddings=8,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "short_factor": [1.0, 1.7],
            "long_factor": [3.0, 5.5],
        },
    )


def phi3_window_short():
    """Multi-query attention, rope on 3/4 of each head (3 frequencies), longrope with ``L0 = 32``
    (the short factors; attention factor ``sqrt(1 + ln 2 / ln 32)``), sliding window 5 on every
    layer, tied head (Phi-4-mini ties its embeddings)."""
    return T.Phi3Config(
        **_TINY,
        num_key_value_heads=1,
        partial_rotary_factor=0.75,
        original_max_position_embeddings=32,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "short_factor": [1.0, 1.3, 2.1],
            "long_factor": [2.0, 4.0, 9.0],
        },
        sliding_window=5,
        tie_word_embeddings=True,
    )


def neox_parallel():
    """Pythia-style: parallel residual, ``rotary_pct = 0.25`` (one frequency), attention biases,
    untied ``embed_out``."""
    return T.GPTNeoXConfig(**_TINY, rotary_pct=0.25, use_parallel_residual=True)


def neox_sequential():
    """Sequential residual, ``rotary_pct = 0.5``, no attention biases, tied head."""
    return T.GPTNeoXConfig(
        **_TINY,
        rotary_pct=0.5,
        use_parallel_residual=False,
        attention_bias=False,
        tie_word_embeddings=True,
    )


FACTORIES = {
    f.__name__: f for f in (phi3_longrope, phi3_window_short, neox_parallel, neox_sequential)
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_logits_match_transformers_with_left_padding(name):
    lm, model = assert_logits_match(name, FACTORIES[name])
    assert type(model).__name__ in ("Phi3ForCausalLM", "GPTNeoXForCausalLM")


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_incremental_decoding_equals_full_forward(name):
    assert_incremental_decoding(name, FACTORIES[name])


def test_longrope_short_and_long_regimes_match_transformers():
    """``L0 = 8``: a 6-token pass uses the short factors, a 12-token pass the long ones (for every
    position, as transformers does); both match, and the regimes really differ."""
    folder, model = checkpoint("phi3_longrope", phi3_longrope)
    lm = lm_inference.load(folder)
    ids = np.random.RandomState(5).randint(2, V, (2, 12))
    ones = np.ones_like(ids)
    short_ref = torch_logits(model, ids[:, :6], ones[:, :6])
    long_ref = torch_logits(model, ids, ones)
    np.testing.assert_allclose(
        np.asarray(lm.logits(ids[:, :6], ones[:, :6])), short_ref, rtol=0, atol=_tol(short_ref)
    )
    np.testing.assert_allclose(
        np.asarray(lm.logits(ids, ones)), long_ref, rtol=0, atol=_tol(long_ref)
    )
    assert np.abs(long_ref[:, :6] - short_ref).max() > 1e-2  # the switch is exercised
    # prefill into a cache of <= L0 slots decodes in the short regime
    out, cache = lm.prefill(lm.params, jnp.asarray(ids[:, :5]), jnp.asarray(ones[:, :5]), 6)
    np.testing.assert_allclose(np.asarray(out.logits), short_ref[:, 4], atol=_tol(short_ref))
    out, _ = lm.decode_step(lm.params, jnp.asarray(ids[:, 5]), cache)
    np.testing.assert_allclose(np.asarray(out.logits), short_ref[:, 5], atol=_tol(short_ref))


def test_neox_save_pretrained_round_trips_through_transformers(tmp_path):
    """``embed_out`` (the checkpoint name of the untied head) loads back into transformers."""
    lm = lm_inference.load(checkpoint("neox_parallel", neox_parallel)[0])
    lm.save_pretrained(tmp_path)
    model = T.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ids = np.random.RandomState(6).randint(2, V, (1, 7))
    ref = torch_logits(model, ids, np.ones_like(ids))
    np.testing.assert_allclose(np.asarray(lm.logits(ids)), ref, rtol=0, atol=_tol(ref))


def test_unsupported_rope_types_raise():
    from lm_inference.models.gpt_neox import GPTNeoXForCausalLM

    cfg = T.GPTNeoXConfig(
        **_TINY, rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    )
    with pytest.raises(NotImplementedError, match="rope type 'dynamic' is not supported"):
        GPTNeoXForCausalLM(cfg, jnp.float32)
