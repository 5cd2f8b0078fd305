"""Tiny random Hugging Face checkpoints made locally with transformers' torch classes (test oracle).

torch is a test-only dependency: it builds the reference models and their ``save_pretrained``
checkpoints; the code under test loads them with safetensors and runs them in JAX.
"""

import functools
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


def torch_model(name: str, seed: int = 0):
    """A random-weight transformers model (eager attention, weights ~ N(0, 0.3^2))."""
    torch.manual_seed(seed)
    cfg = CONFIGS[name]()
    cfg._attn_implementation = "eager"
    model = T.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@functools.cache
def checkpoint(name: str) -> tuple[str, object]:
    """``(folder, torch model)``: the model saved with ``save_pretrained`` (cached per session)."""
    model = torch_model(name)
    folder = tempfile.mkdtemp(prefix=f"ckpt_{name}_")
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
