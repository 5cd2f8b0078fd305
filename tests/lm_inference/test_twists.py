"""Twist checkpoints record what they were trained for, and loading checks it."""

import jax
import numpy as np
import pytest

from lm_inference import potentials
from lm_inference.tabular import TabularLM
from lm_inference.target import Target
from lm_inference.twists import (
    TwistMismatchError,
    head_twist,
    load_params,
    load_twist,
    potential_name,
    read_record,
    save_params,
    save_twist,
    twist_record,
)
from tests.lm_inference._tiny import soft_potential, tiny


def _trained_like(target, kind="mlp", prefix_size=0, seed=0):
    lm = target.lm
    tw = head_twist(
        jax.random.key(seed),
        lm.hidden_size,
        lm.vocab_size,
        target.num_tokens,
        kind,
        prefix_size=prefix_size,
    )
    # non-zero parameters, so that a round trip is not trivially zero
    params = jax.tree.map(lambda x: x + 0.01 * jax.numpy.arange(x.size).reshape(x.shape), tw.params)
    return tw._replace(params=params)


def test_save_load_round_trip_and_record(tmp_path):
    target, _ = tiny(True)
    tw = _trained_like(target, prefix_size=4)
    path = tmp_path / "tw.safetensors"
    save_twist(path, tw, target, method="ctl")
    rec = read_record(path)
    assert rec["num_tokens"] == 3 and rec["head"]["kind"] == "mlp"
    assert rec["head"]["prefix_size"] == 4 and rec["extra"] == {"method": "ctl"}
    assert rec["model"]["model_type"] == "tabular" and rec["model"]["vocab_size"] == 4
    assert rec["potential"] == "tests.lm_inference._tiny.soft_potential"
    assert rec["prompt"]["first_ids"] == [0, 1]
    loaded = load_twist(path, target)  # head kind and prefix size come from the record
    for a, b in zip(jax.tree.leaves(tw.params), jax.tree.leaves(loaded.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_for_another_T_raises_with_the_fix(tmp_path):
    target, _ = tiny(True)
    path = tmp_path / "tw.safetensors"
    save_twist(path, _trained_like(target), target)
    other = Target(target.lm, [0, 1], 4, soft_potential)
    with pytest.raises(
        TwistMismatchError, match=r"T \(num_tokens\): trained for 3, this target has 4"
    ) as e:
        load_twist(path, other)
    assert "Fix: train a twist for this target" in str(e.value)
    assert e.value.mismatches == ["num_tokens"]


def test_load_for_another_model_raises(tmp_path):
    target, _ = tiny(True)
    path = tmp_path / "tw.safetensors"
    save_twist(path, _trained_like(target), target)
    # same architecture and sizes, other weights (another seed)
    lm2 = TabularLM(jax.random.key(1), vocab_size=4, eos_token_id=3)
    with pytest.raises(
        TwistMismatchError, match="same architecture and sizes but different weights"
    ):
        load_twist(path, Target(lm2, [0, 1], 3, soft_potential))
    # another vocabulary
    lm3 = TabularLM(jax.random.key(0), vocab_size=5, eos_token_id=3)
    with pytest.raises(TwistMismatchError, match=r"model: trained for tabular .*vocab 4.*vocab 5"):
        load_twist(path, Target(lm3, [0, 1], 3, soft_potential))
    # the same model rebuilt (same seed) is the same model
    lm4 = TabularLM(jax.random.key(0), vocab_size=4, eos_token_id=3)
    load_twist(path, Target(lm4, [0, 1], 3, soft_potential))


def test_load_for_another_potential_or_prompt_raises_unless_allowed(tmp_path):
    target, _ = tiny(True)
    path = tmp_path / "tw.safetensors"
    save_twist(path, _trained_like(target), target)
    other = Target(target.lm, [0, 1], 3, potentials.contains_token(2))
    with pytest.raises(TwistMismatchError, match="potential: trained for") as e:
        load_twist(path, other)
    assert "allow=('potential',)" in str(e.value)
    with pytest.warns(UserWarning, match="allowed"):
        load_twist(path, other, allow=("potential",))
    with pytest.raises(TwistMismatchError, match=r"prompt: trained for token ids \[0, 1\]"):
        load_twist(path, Target(target.lm, [0, 2], 3, soft_potential))
    # T can never be allowed: another T has other parameter shapes
    with pytest.raises(TwistMismatchError, match="cannot be reused"):
        load_twist(path, Target(target.lm, [0, 1], 4, soft_potential), allow=("num_tokens",))


def test_load_with_another_head_raises(tmp_path):
    target, _ = tiny(True)
    path = tmp_path / "tw.safetensors"
    save_twist(path, _trained_like(target, "mlp"), target)
    linear = head_twist(jax.random.key(0), target.lm.hidden_size, 4, 3, "linear")
    with pytest.raises(
        TwistMismatchError, match="head: trained as mlp, width 128, requested linear"
    ):
        load_twist(path, target, twist=linear)


def test_load_params_checks_expect_and_old_checkpoints_warn(tmp_path):
    target, _ = tiny(True)
    tw = _trained_like(target)
    path = tmp_path / "old.safetensors"
    save_params(path, {"params": tw.params})  # no record (as before records existed)
    assert read_record(path) is None
    with pytest.warns(UserWarning, match="records nothing"):
        load_params(path, {"params": tw.params}, expect=twist_record(target, tw))
    path2 = tmp_path / "new.safetensors"
    save_params(path2, {"params": tw.params}, record=twist_record(target, tw))
    other = Target(target.lm, [0, 1], 3, None)
    with pytest.raises(TwistMismatchError, match="trained for .*soft_potential.*'none'"):
        load_params(path2, {"params": tw.params}, expect=twist_record(other, tw))
    with pytest.raises(FileNotFoundError):
        read_record(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a safetensors"):
        read_record(tmp_path / "junk.safetensors")


def test_potential_names_are_stable_and_distinguish_arguments():
    a, b, c = (
        potentials.contains_token(2),
        potentials.contains_token(2),
        potentials.contains_token(3),
    )
    assert potential_name(a) == potential_name(b) != potential_name(c)
    assert "0x" not in potential_name(a)
    assert potential_name(None) == "none"
    assert potential_name(potentials.tempered(a, 0.5)) != potential_name(
        potentials.tempered(a, 0.25)
    )
