"""Checkpoint loading: formats (single, sharded, hub cache), tokenizers, and clear errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import lm_inference
from lm_inference.loading import CheckpointError, UnsupportedArchitectureError
from tests.lm_inference._hf import checkpoint, left_padded_batch, torch_logits, word_tokenizer


def _copy(tmp_path, name="llama3") -> Path:
    dst = tmp_path / name
    shutil.copytree(checkpoint(name)[0], dst)
    return dst


def test_sharded_checkpoint_with_index(tmp_path):
    _, model = checkpoint("smollm")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    lm = lm_inference.load(tmp_path)
    ids, mask = left_padded_batch()
    ref = torch_logits(model, ids, mask)
    np.testing.assert_allclose(np.asarray(lm.logits(ids, mask))[mask > 0], ref[mask > 0], atol=1e-4)


def test_hub_id_resolves_through_local_cache(tmp_path):
    """A hub id loads from a Hugging Face cache folder, offline (tests set HF_HUB_OFFLINE=1)."""
    cache = tmp_path / "hub"
    snap = cache / "models--tiny-org--tiny-llama" / "snapshots" / ("a" * 40)
    shutil.copytree(checkpoint("llama3")[0], snap)
    (cache / "models--tiny-org--tiny-llama" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-llama" / "refs" / "main").write_text("a" * 40)
    lm = lm_inference.load("tiny-org/tiny-llama", cache_dir=cache)
    assert lm.config.model_type == "llama"
    with pytest.raises(
        CheckpointError, match="neither a local folder nor in the Hugging Face cache"
    ):
        lm_inference.load("tiny-org/not-there", cache_dir=cache)


def test_save_pretrained_round_trip_loads_in_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    lm = lm_inference.load(checkpoint("gpt_neo")[0])
    lm.save_pretrained(tmp_path)
    back = lm_inference.load(tmp_path)
    ids, mask = left_padded_batch()
    np.testing.assert_array_equal(
        np.asarray(back.logits(ids, mask)), np.asarray(lm.logits(ids, mask))
    )
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    np.testing.assert_allclose(
        torch_logits(ref, ids, mask)[mask > 0],
        np.asarray(lm.logits(ids, mask))[mask > 0],
        atol=1e-4,
    )


def test_no_tokenizer_files_works_on_token_ids(tmp_path):
    lm = lm_inference.load(checkpoint("gpt2")[0])
    assert lm.tokenizer is None
    assert lm.logits(np.array([[3, 4, 5]])).shape == (1, 3, lm.vocab_size)
    with pytest.raises(ValueError, match="no tokenizer"):
        lm.encode("hello")


@pytest.mark.parametrize("with_pad", [True, False])
def test_tokenizer_with_and_without_pad_token(tmp_path, with_pad):
    folder = _copy(tmp_path)
    word_tokenizer(with_pad).save_pretrained(folder)
    lm = lm_inference.load(folder)
    assert lm.tokenizer is not None and lm.tokenizer.pad_token is not None
    assert lm.tokenizer.padding_side == "left"
    ids, mask = lm.encode(["w5 w6 w7", "w9"])
    np.testing.assert_array_equal(np.asarray(mask), [[1, 1, 1], [0, 0, 1]])
    assert int(ids[1, -1]) == 9
    assert np.all(np.isfinite(np.asarray(lm.logits(ids, mask))))


def test_missing_weights_file(tmp_path):
    folder = _copy(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="expected model.safetensors"):
        lm_inference.load(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not used")
    with pytest.raises(CheckpointError, match="safe_serialization=True"):
        lm_inference.load(folder)


def test_missing_folder_and_missing_shard(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        lm_inference.load(tmp_path / "nowhere")
    folder = tmp_path / "sharded"
    checkpoint("smollm")[1].save_pretrained(folder, max_shard_size="20KB")
    next(folder.glob("model-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shards that are missing"):
        lm_inference.load(folder)


def test_corrupt_weights_file(tmp_path):
    folder = _copy(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        lm_inference.load(folder)


def test_config_weights_shape_mismatch(tmp_path):
    folder = _copy(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 24
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatches.*mlp"):
        lm_inference.load(folder)


def test_config_missing_tensor(tmp_path):
    folder = _copy(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing tensors: \['model.layers.2"):
        lm_inference.load(folder)


@pytest.mark.parametrize("model_type", ["bert", "definitely_not_a_model"])
def test_unsupported_architecture_names_it_and_lists_supported(tmp_path, model_type):
    folder = _copy(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match=f"'{model_type}'.*gpt2.*gpt_neo.*llama"):
        lm_inference.load(folder)


def test_prompt_longer_than_max_positions():
    lm = lm_inference.load(checkpoint("gpt2")[0])
    too_long = np.zeros((1, lm.max_positions + 1), np.int32)
    with pytest.raises(ValueError, match="maximum positions"):
        lm.logits(too_long)
    with pytest.raises(ValueError, match="maximum positions"):
        lm_inference.sample(None, lm, np.zeros(lm.max_positions - 3, np.int32), max_new_tokens=8)
    with pytest.raises(ValueError, match="maximum positions"):
        lm_inference.Target(lm, np.zeros(lm.max_positions - 3, np.int32), 8)


def test_bad_token_ids():
    lm = lm_inference.load(checkpoint("gpt2")[0])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 48\)"):
        lm.logits(np.array([[1, 48]]))
    with pytest.raises(ValueError, match="integer array"):
        lm.logits(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        lm.logits(np.array([[1, 2]]), np.ones((1, 3)))
