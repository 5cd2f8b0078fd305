"""Peak host memory and wall time of ``lm_inference.load`` vs reading the whole checkpoint first.

A random-weight Llama checkpoint (width 1536, 18 layers, MLP 4096, vocabulary 32000, 12 heads with
2 KV heads, untied head: 537M parameters, 2.15 GB in float32; ``--quick``: 4 layers, width 1024,
vocabulary 4096, 53M parameters) is written once under ``--dir`` (one ``model.safetensors``,
reused when present). Each load runs in a fresh Python process on the CPU backend, which reports
the growth of its peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs`` after
the imports and warm-up) over its resident memory just before the load, its resident memory after
it, and the load's wall time. Two loaders, into float32 and into bfloat16:

* new: ``lm_inference.load`` (tensor by tensor to the final device and dtype);
* old: the former implementation, kept below as :func:`load_all_then_convert`: every tensor of
  every file into a dict of NumPy arrays, then each converted with ``jnp.asarray(x, dtype)``.

On CPU the device is host memory, so the loaded parameters themselves are one checkpoint copy
(half of one in bfloat16). Reads are from the page cache (the file was just written or read).

Usage: python benchmarks/bench_loading.py [--quick] [--dir /tmp/ckpt-500m]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
SIZES = {  # Llama-like, GQA, untied head
    False: dict(
        hidden_size=1536,
        intermediate_size=4096,
        num_hidden_layers=18,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=32000,
    ),
    True: dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=4,
        vocab_size=4096,
    ),
}


def write_checkpoint(folder: Path, quick: bool) -> None:
    """``config.json`` and random float32 weights under the Hugging Face names, unless present."""
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return
    import jax.numpy as jnp
    from flax import nnx
    from safetensors.numpy import save_file
    from transformers import LlamaConfig

    from lm_inference.models import module_class

    config = LlamaConfig(**SIZES[quick], max_position_embeddings=2048, tie_word_embeddings=False)
    abstract = nnx.eval_shape(lambda: module_class(config)(config, jnp.float32))
    rng = np.random.default_rng(0)
    tensors = {
        ".".join(map(str, p)): (rng.random(v.get_value().shape, np.float32) - 0.5) * 0.04
        for p, v in nnx.to_flat_state(nnx.state(abstract))
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)  # last: its presence marks a complete checkpoint


def checkpoint_stats(folder: Path) -> tuple[int, int, int]:
    """``(parameters, bytes, largest tensor bytes)`` from the safetensors header."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as h:
        shapes = [h.get_slice(k).get_shape() for k in h.keys()]
    sizes = [int(np.prod(s)) for s in shapes]
    return sum(sizes), 4 * sum(sizes), 4 * max(sizes)


def load_all_then_convert(folder: Path, dtype):
    """The former loader: all tensors read into a dict first, then converted one by one."""
    import jax.numpy as jnp
    from flax import nnx
    from safetensors import safe_open
    from transformers import AutoConfig

    from lm_inference.loading import CausalLM, _lookup, _weight_files
    from lm_inference.models import module_class

    config = AutoConfig.from_pretrained(str(folder))
    cls = module_class(config)
    tensors = {}
    for f in _weight_files(folder):
        with safe_open(str(f), framework="np") as h:
            for k in h.keys():
                tensors[k] = h.get_tensor(k)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(config, dtype)))
    flat = [
        (p, var.replace(value=jnp.asarray(_lookup(tensors, ".".join(map(str, p))), dtype)))
        for p, var in nnx.to_flat_state(state)
    ]
    del tensors
    return CausalLM(nnx.merge(graphdef, nnx.from_flat_state(flat)), config, None, folder)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak(reset: bool) -> int:
    if reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(folder: Path, loader: str, dtype_name: str) -> dict:
    """In this (fresh) process: load once, return peak growth, final growth and seconds."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from transformers import AutoConfig

    import lm_inference
    from lm_inference.models import module_class

    dtype = jnp.dtype(dtype_name)
    config = AutoConfig.from_pretrained(str(folder))  # warm: imports the config's modules
    nnx.eval_shape(lambda: module_class(config)(config, dtype))
    jnp.zeros(8, dtype).astype(jnp.float32).block_until_ready()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident memory to the current one
        reset = True
    except OSError:
        reset = False
    before = _rss()
    t0 = time.perf_counter()
    if loader == "new":
        lm = lm_inference.load(folder, dtype)
    else:
        lm = load_all_then_convert(folder, dtype)
    jax.block_until_ready(lm.params)
    seconds = time.perf_counter() - t0
    growth, final = _peak(reset) - before, _rss() - before
    leaves = jax.tree.leaves(lm.params)
    fingerprint = float(sum(jnp.sum(x.reshape(-1)[:4096].astype(jnp.float32)) for x in leaves))
    return {
        "growth": growth,
        "final": final,
        "before": before,
        "seconds": seconds,
        "reset": reset,
        "fingerprint": fingerprint,
    }


def run_child(folder: Path, loader: str, dtype: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--dir", str(folder), "--measure", loader, "--dtype", dtype]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{loader} {dtype} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dir", default=None, help="checkpoint folder (written once, then reused)")
    p.add_argument("--measure", choices=["new", "old"], help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    folder = Path(args.dir or ("/tmp/ckpt-quick" if args.quick else "/tmp/ckpt-500m"))
    if args.measure:
        print(json.dumps(measure(folder, args.measure, args.dtype)))
        return

    import jax

    t0 = time.perf_counter()
    write_checkpoint(folder, args.quick)
    print(f"checkpoint {folder} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    n_params, nbytes, largest = checkpoint_stats(folder)
    gb = 1e9
    rows = []
    for dtype in ("float32", "bfloat16"):
        new, old = run_child(folder, "new", dtype), run_child(folder, "old", dtype)
        same = np.isclose(new["fingerprint"], old["fingerprint"], rtol=1e-6)
        assert same, f"the two loaders disagree: {new['fingerprint']} vs {old['fingerprint']}"
        assert new["reset"] and old["reset"], "peak RSS could not be reset; numbers are lifetime"
        rows.append((dtype, new, old))
        print(
            f"{dtype}: peak RSS growth new {new['growth'] / gb:.2f} GB "
            f"({new['growth'] / nbytes:.2f}x checkpoint, {new['seconds']:.1f} s), "
            f"old {old['growth'] / gb:.2f} GB ({old['growth'] / nbytes:.2f}x, "
            f"{old['seconds']:.1f} s)",
            flush=True,
        )

    size = SIZES[args.quick]
    lines = [
        "# bench_loading",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__} (cpu backend); no GPU lent in this run. "
        f"quick={args.quick}",
        "",
        f"Random-weight Llama checkpoint (width {size['hidden_size']}, "
        f"{size['num_hidden_layers']} layers, MLP {size['intermediate_size']}, vocabulary "
        f"{size['vocab_size']}, {size['num_attention_heads']} heads / "
        f"{size['num_key_value_heads']} KV heads, untied head): "
        f"{n_params / 1e6:.1f}M parameters, one float32 `model.safetensors` of "
        f"{nbytes / gb:.2f} GB, largest tensor {largest / gb:.3f} GB "
        f"({largest / nbytes:.1%}). Each load in a fresh process on the CPU backend (the device is "
        "host memory, so the loaded parameters are themselves one copy in the target dtype); "
        "peak RSS = growth of the peak resident memory over the resident memory just before the "
        "load (imports done); reads from the page cache. new: `lm_inference.load`; old: "
        "every tensor into a dict, then converted (the former loader).",
        "",
        "| target dtype | parameters | checkpoint bytes | peak RSS new (GB) | peak RSS old (GB) "
        "| new / old | new / checkpoint | old / checkpoint | RSS after load new / old (GB) "
        "| load s new | load s old |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype, new, old in rows:
        lines.append(
            f"| {dtype} | {n_params / 1e6:.1f}M | {nbytes:,} | {new['growth'] / gb:.2f} "
            f"| {old['growth'] / gb:.2f} | {new['growth'] / old['growth']:.2f} "
            f"| {new['growth'] / nbytes:.2f} | {old['growth'] / nbytes:.2f} "
            f"| {new['final'] / gb:.2f} / {old['final'] / gb:.2f} "
            f"| {new['seconds']:.2f} | {old['seconds']:.2f} |"
        )
    lines += [
        "",
        f"Process resident memory before the load (imports done): "
        f"{rows[0][1]['before'] / gb:.2f} GB. Both loaders give the same parameters (checked).",
    ]
    OUT.mkdir(exist_ok=True)
    out = OUT / f"bench_loading{'_quick' if args.quick else ''}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
