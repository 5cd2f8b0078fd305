"""A tiny enumerable LM whose tokens decode to short strings (for regex / word / host tests)."""

import functools

import jax
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lm_inference.tabular import TabularLM

# byte-level BPE: "Ġ" is the space byte
VOCAB = {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġa": 4, ".": 5, "<eos>": 6}
TEXT = ["a", "b", "ab", " ", " a", ".", None]
EOS = 6


@functools.cache
def tokenizer() -> PreTrainedTokenizerFast:
    bpe = models.BPE(vocab=VOCAB, merges=[("a", "b"), ("Ġ", "a")])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@functools.cache
def text_lm(seed: int = 0, vocab_size: int = 7, scale: float = 1.0) -> TabularLM:
    """``TabularLM`` over the tokens above (``vocab_size > 7`` pads ids the tokenizer lacks)."""
    return TabularLM(
        jax.random.key(seed), vocab_size=vocab_size, eos_token_id=EOS, scale=scale,
        tokenizer=tokenizer(),
    )
