"""Weights, KV cache and particles on ``('particles', 'model')`` meshes (:mod:`lm_inference.sharding`).

The runs happen in a subprocess with 8 forced CPU host devices (``_sharded_runs.py``; the device
count is fixed when JAX starts). Ground truth is the unsharded run with the same key: sharding
moves numbers, so the samples, the resampling decisions and the ancestors must be identical, and
the log weights and ``log Z_hat`` equal up to the reassociation of the sums split over
``'model'`` (float32 rounding: a few ulps of values of order 1-10, so ``1e-5``; observed
``<= 5e-7``).
"""

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).with_name("_sharded_runs.py")
ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5


@functools.cache
def _runs(which: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, str(SCRIPT), which], capture_output=True, text=True, env=env,
        timeout=900, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _same(c: dict) -> None:
    assert c["same_samples"] and c["same_resampled"], c
    assert c["log_Z"] <= TOL and c["log_weights"] <= TOL, c


@pytest.mark.parametrize("mesh", ["1x8", "2x4", "4x2", "8x1"])
def test_sharded_runs_equal_unsharded(mesh):
    """smc and sample on an 8-head Llama: same samples, log Z to rounding."""
    res = _runs("llama")
    assert res["devices"] == 8
    run = res["llama"][mesh]
    _same(run["smc"])
    if mesh == "2x4":  # conditional SMC (the upper bound's sweep) on one mesh
        _same(run["csmc"])
    assert run["sample_same"] and run["sample_log_probs"] <= TOL, run
    if not mesh.startswith("1x"):
        assert run["samples_spec"] == "P('particles',)"


def test_weights_and_cache_are_split():
    """On a 2x4 mesh: q_proj split over its output rows, o_proj over its input columns, norms
    replicated, the cache over particles and KV heads; ``load(mesh=)`` places tensor by tensor."""
    res = _runs("llama")
    p = res["placement"]
    assert p["q_proj"] == ["P('model', None)", [64 // 4, 64]]
    assert p["o_proj"] == ["P(None, 'model')", [64, 64 // 4]]
    assert p["norm"] == "P()"
    # [N, L, H_kv, S, D] = [8, 2, 8, 8, 8] split 2 ways on N and 4 ways on H_kv
    assert p["cache_k"] == ["P('particles', None, 'model')", [4, 2, 2, 8, 8]]
    assert "mesh={'particles': 2, 'model': 4}" in p["repr"]
    load = res["load"]
    assert load["up_proj"] == ["P('model', None)", [48 // 4, 64]]
    assert load["mesh"] == {"particles": 2, "model": 4}
    _same(load["smc"])


def test_mesh_errors_name_the_fix():
    errors = _runs("llama")["errors"]
    assert "does not divide the model's 8 attention heads and 2 KV heads" in errors["heads"]
    assert "of size 1 or 2" in errors["heads"]
    assert "num_particles=12 must be divisible" in errors["particles"]
    assert "multiple of 8" in errors["particles"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch",
    ["gemma2", "gemma3", "gpt2", "gpt_neo", "gpt_neox", "mistral", "olmo2", "phi3", "qwen2",
     "qwen3", "smollm3"],
)
def test_every_architecture_sharded(arch):
    """Every architecture's rules on a 4x2 mesh (fused projections replicated, GPT-2's Conv1D
    layout, OLMo 2's norm over the projection width): the same run as unsharded."""
    _same(_runs("architectures")["architectures"][arch])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one():
    """The same SMC run with the particles over two ``jax.distributed`` processes on localhost
    (CPU gloo collectives, a 2 x 2 mesh: 'particles' across the processes, 'model' within each)
    gives the single-process, unsharded run: same samples, log Z to float rounding."""
    import jax
    import numpy as np

    from lm_inference import smc
    from tests.lm_inference._sharded_runs import llama_target

    ref = smc(jax.random.key(1), llama_target(), 16)
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    script = str(SCRIPT.with_name("_multiprocess_run.py"))
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(i), "2", port], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600))
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    res = json.loads(outs[0][0].strip().splitlines()[-1])
    assert res["processes"] == 2 and res["devices"] == 4
    assert res["mesh"] == {"particles": 2, "model": 2}
    np.testing.assert_array_equal(res["samples"], np.asarray(ref.samples))
    np.testing.assert_allclose(res["log_weights"], np.asarray(ref.log_weights), rtol=0, atol=TOL)
    assert abs(res["log_Z"] - float(ref.log_Z)) <= TOL
