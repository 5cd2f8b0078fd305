"""Tiny random Hugging Face checkpoints made locally with transformers' torch classes (test oracle).

torch is a test-only dependency: it builds the reference models and their ``save_pretrained``
checkpoints; the code under test loads them with safetensors and runs them in JAX.
"""

import atexit
import functools
import shutil
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers as T  # noqa: E402

V = 48  # vocabulary of the tiny models

_LLAMA = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=None,
)

# name -> config factory; each exercises something the others do not
CONFIGS = {
    # learned positions, fused Conv1D qkv, tied head
    "gpt2": lambda: T.GPT2Config(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=1
    ),
    # per-layer 1/(l+1) attention scaling and an untied head
    "gpt2_untied_scaled": lambda: T.GPT2Config(
        vocab_size=V,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        scale_attn_by_inverse_layer_idx=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
    ),
    # unscaled attention, alternating global / local (window 4 < sequence length)
    "gpt_neo": lambda: T.GPTNeoConfig(
        vocab_size=V,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        max_position_embeddings=64,
        attention_types=[[["global", "local"], 1]],
        window_size=4,
        bos_token_id=0,
        eos_token_id=1,
    ),
    # Llama 3 rope scaling, grouped-query attention (4 heads, 2 kv heads), biases, untied head
    "llama3": lambda: T.LlamaConfig(
        **_LLAMA,
        num_key_value_heads=2,
        attention_bias=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8,
        },
    ),
    # Llama 2 style with linear rope scaling, multi-query attention
    "llama2_linear": lambda: T.LlamaConfig(
        **_LLAMA,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    ),
    # SmolLM: a Llama with tied embeddings
    "smollm": lambda: T.LlamaConfig(**_LLAMA, num_key_value_heads=2, tie_word_embeddings=True),
    # sliding-window attention on every layer (window 5 < sequence length)
    "mistral": lambda: T.MistralConfig(**_LLAMA, num_key_value_heads=2, sliding_window=5),
    # q/k/v biases, tied head, sliding window on layers >= max_window_layers
    "qwen2": lambda: T.Qwen2Config(
        **_LLAMA,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        use_sliding_window=True,
        sliding_window=5,
        max_window_layers=1,
    ),
}


def torch_model(name: str, seed: int = 0, factory=None):
    """A random-weight transformers model (eager attention, weights ~ N(0, 0.3^2)).

    ``factory`` (a config factory) defaults to ``CONFIGS[name]``; test modules of further
    architectures pass their own.
    """
    torch.manual_seed(seed)
    cfg = (factory or CONFIGS[name])()
    cfg._attn_implementation = "eager"
    model = T.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@functools.cache
def checkpoint(name: str, factory=None) -> tuple[str, object]:
    """``(folder, torch model)``: the model saved with ``save_pretrained`` (cached per session)."""
    model = torch_model(name, factory=factory)
    folder = tempfile.mkdtemp(prefix=f"ckpt_{name}_")
    atexit.register(shutil.rmtree, folder, True)
    model.save_pretrained(folder)
    return folder, model


def left_padded_batch(seed: int = 0, batch: int = 3, length: int = 12):
    """Random ids ``[B, T]`` and a left-padding mask (rows with 0, 4 and 7 pads)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(2, V, (batch, length))
    mask = np.ones_like(ids)
    for row, pads in enumerate([0, 4, 7][:batch]):
        mask[row, :pads] = 0
    return ids, mask


def torch_logits(model, ids, mask) -> np.ndarray:
    """Reference logits with positions counted from the first real token, as ``generate`` does."""
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(pos),
        )
    return out.logits.float().numpy()


def word_tokenizer(with_pad: bool):
    """A local word-level tokenizer over ``V`` words (ids 0 = BOS, 1 = EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<s>": 0, "</s>": 1, **{f"w{i}": i for i in range(2, V)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = dict(bos_token="<s>", eos_token="</s>", unk_token="</s>")
    if with_pad:
        kw["pad_token"] = "<s>"
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def _tol(ref):
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


def assert_logits_match(name: str, factory=None):
    """Full-forward float32 logits of the JAX model == transformers', with left padding.

    Tolerance ``1e-4 * max(1, max |logit|)`` (relative to the logit scale); observed differences
    are ~1e-6, float32 rounding of a different but exact evaluation order.
    """
    import lm_inference

    folder, model = checkpoint(name, factory)
    lm = lm_inference.load(folder)
    assert lm.config.model_type == model.config.model_type
    ids, mask = left_padded_batch()
    ref = torch_logits(model, ids, mask)
    out = np.asarray(lm.logits(ids, mask))
    assert out.shape == ref.shape and out.dtype == np.float32
    real = mask.astype(bool)  # padded positions are undefined in both implementations
    np.testing.assert_allclose(out[real], ref[real], rtol=0, atol=_tol(ref))
    return lm, model


def assert_incremental_decoding(name: str, factory=None):
    """prefill(prompt) then decode_step token by token gives the full pass's logits at each step."""
    import jax
    import jax.numpy as jnp

    import lm_inference

    lm = lm_inference.load(checkpoint(name, factory)[0])
    ids, mask = left_padded_batch(seed=1, length=14)
    full = np.asarray(lm.logits(ids, mask))
    p = 8  # every row has >= 1 real prompt token; windows (4, 5) are crossed while decoding
    out, cache = lm.prefill(lm.params, jnp.asarray(ids[:, :p]), jnp.asarray(mask[:, :p]), 14)
    np.testing.assert_allclose(np.asarray(out.logits), full[:, p - 1], atol=_tol(full))
    step = jax.jit(lm.decode_step)
    for t in range(p, 14):
        out, cache = step(lm.params, jnp.asarray(ids[:, t]), cache)
        np.testing.assert_allclose(np.asarray(out.logits), full[:, t], atol=_tol(full))
    assert out.hidden.shape == (3, lm.hidden_size)
    assert all(x.shape[0] == 3 for x in jax.tree.leaves(cache))  # batch axis first


def assert_cache_gather(name: str, factory=None):
    """Reordering the cache after a permutation (resampling) == decoding the permuted rows."""
    import jax.numpy as jnp

    import lm_inference
    from lm_inference.base import reorder_cache

    lm = lm_inference.load(checkpoint(name, factory)[0])
    ids, mask = left_padded_batch(seed=2, length=12)
    perm, p = np.array([2, 0, 2]), 8  # a resampling: duplicates and drops rows
    _, cache = lm.prefill(lm.params, jnp.asarray(ids[:, :p]), jnp.asarray(mask[:, :p]), 12)
    cache = reorder_cache(cache, jnp.asarray(perm))
    _, ref_cache = lm.prefill(
        lm.params, jnp.asarray(ids[perm, :p]), jnp.asarray(mask[perm, :p]), 12
    )
    for t in range(p, 12):
        out, cache = lm.decode_step(lm.params, jnp.asarray(ids[perm, t]), cache)
        ref, ref_cache = lm.decode_step(lm.params, jnp.asarray(ids[perm, t]), ref_cache)
        np.testing.assert_array_equal(np.asarray(out.logits), np.asarray(ref.logits))
