"""The matrix-product floor of an LM SMC sweep on one CPU core (embedded model, GPT-2 small).

The speed goals against genlm-control (issue: programmable LM targets: 30x on the embedded model,
10x on the 124M model, N = 64, T = 32) meet a floor: per generated token a forward runs the
model's matrix products on N rows, and no implementation on the same core goes below their time.
This script times each product of one decode step, ``[N, k] x [k, m]`` for every weight shape of
the model (from its ``config.json``: GPT-2 and Llama layouts) and the output projection, after
warm-up, in XLA and in torch, float32 and bfloat16 (skipped where the CPU has no bf16 units and
emulates it), one thread, and sums them into the time one sweep's products take.

It reads our and genlm-control's sweep times from ``bench_genlm_control.py``'s JSON results and
prints ours / floor and genlm-control / floor: the second is the largest ratio any implementation
could reach. Attention over the KV cache (at most 36 positions here), sampling and the
potentials are left out; run it on the machine that ran ``bench_genlm_control.py``.

    python benchmarks/bench_matmul_floor.py [--models embedded,gpt2-small] [--n 64] [--T 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_architectures import median_time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

MODELS = {
    "gpt2-small": ("bench_genlm_control_gpt2-small-random.json", None),
    "embedded": ("bench_genlm_control_default_model.json", ROOT / "lm_inference" / "default_model"),
}
# GPT-2 small (the random-weight 124M model bench_genlm_control makes)
GPT2_SMALL = dict(model_type="gpt2", n_layer=12, n_embd=768, vocab_size=50257)


def product_shapes(config: dict) -> tuple[int, list[tuple[int, int]], tuple[int, int]]:
    """``(layers, per-layer [(k, m)], head (k, m))`` of one token's forward (GPT-2, Llama)."""
    if config["model_type"] == "gpt2":
        d = config["n_embd"]
        mlp = config.get("n_inner") or 4 * d
        return (
            config["n_layer"],
            [(d, 3 * d), (d, d), (d, mlp), (mlp, d)],
            (d, config["vocab_size"]),
        )
    d, i = config["hidden_size"], config["intermediate_size"]
    hd = config.get("head_dim") or d // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    layer = [(d, q), (d, kv), (d, kv), (q, d), (d, i), (d, i), (i, d)]
    return config["num_hidden_layers"], layer, (d, config["vocab_size"])


def _single_thread() -> None:
    flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up (compilation for XLA)
    fn()
    return median_time(fn, reps)


def time_xla(n: int, k: int, m: int, dtype: str, reps: int) -> float:
    """Median seconds of ``[n, k] x [k, m]`` under ``jax.jit`` (block_until_ready)."""
    import jax
    import jax.numpy as jnp

    dt = jnp.dtype(dtype)
    x = jax.random.normal(jax.random.key(0), (n, k), dt)
    w = jax.random.normal(jax.random.key(1), (k, m), dt)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=dt))
    return _median_time(lambda: f(x, w).block_until_ready(), reps)


def time_torch(n: int, k: int, m: int, dtype: str, reps: int) -> float | None:
    """Median seconds of ``torch.matmul`` at one thread, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=g).to(dt)
    w = torch.randn(k, m, generator=g).to(dt)
    with torch.inference_mode():
        return _median_time(lambda: torch.matmul(x, w), reps)


def sweep_floor(shapes, timer, n: int, T: int, dtype: str, reps: int) -> dict:
    """Seconds of the sweep's matrix products at the speed ``timer`` measures, and GFLOP/s."""
    layers, layer_shapes, head = shapes
    per_shape = {}
    for k, m in [*dict.fromkeys([*layer_shapes, head])]:
        t = timer(n, k, m, dtype, reps)
        if t is None:
            return {}
        per_shape[f"{k}x{m}"] = {"s": t, "gflops": 2 * n * k * m / t / 1e9}
    step = layers * sum(per_shape[f"{k}x{m}"]["s"] for k, m in layer_shapes)
    step += per_shape[f"{head[0]}x{head[1]}"]["s"]
    flop = T * 2 * n * (layers * sum(k * m for k, m in layer_shapes) + head[0] * head[1])
    return {
        "per_shape": per_shape,
        "sweep_s": T * step,
        "gflop": flop / 1e9,
        "gflops": flop / (T * step) / 1e9,
    }


def measured_sweeps(name: str) -> tuple[float, float] | None:
    """(ours, genlm-control) median seconds of bench_genlm_control's first row, if present."""
    path = RESULTS / MODELS[name][0]
    if not path.exists():
        return None
    row = json.loads(path.read_text())["rows"][0]
    return statistics.median(row[3]["times"]), statistics.median(row[4]["times"])


def model_section(name: str, args) -> list[str]:
    """The table of one model: per library and dtype, product speeds, floor, ratios."""
    cfg_dir = MODELS[name][1]
    config = json.loads((cfg_dir / "config.json").read_text()) if cfg_dir else GPT2_SMALL
    shapes = product_shapes(config)
    rows, skipped = [], []
    for lib, timer in (("XLA", time_xla), ("torch", time_torch)):
        for dtype in ("float32", "bfloat16"):
            if dtype == "bfloat16":  # without bf16 units (AVX-512 BF16, AMX) it is emulated
                probe = timer(args.n, *shapes[2], dtype, 2)
                if probe is not None and 2 * args.n * shapes[2][0] * shapes[2][1] / probe < 5e9:
                    skipped.append(f"{lib} bfloat16 (under 5 GFLOP/s on the output projection)")
                    continue
            r = sweep_floor(shapes, timer, args.n, args.T, dtype, args.reps)
            if r:
                rows.append((lib, dtype, r))
                print(f"{name} {lib} {dtype}: {r['sweep_s']:.2f} s, {r['gflops']:.0f} GFLOP/s")
    sweeps = measured_sweeps(name)
    layers, layer_shapes, head = shapes
    lines = [
        f"## {name}",
        "",
        f"{config['model_type']}, {layers} layers, products per layer "
        + ", ".join(f"{k}x{m}" for k, m in layer_shapes)
        + f", output projection {head[0]}x{head[1]}; N = {args.n}, T = {args.T}: "
        f"{rows[0][2]['gflop']:.1f} GFLOP of matrix products per sweep.",
        "",
        "| library | dtype | GFLOP/s per shape (" + ", ".join(rows[0][2]["per_shape"]) + ") "
        "| sweep GFLOP/s | floor s |" + (" ours / floor | genlm / floor |" if sweeps else ""),
        "|---|---|---|---|---|" + ("---|---|" if sweeps else ""),
    ]
    for lib, dtype, r in rows:
        per = ", ".join(f"{v['gflops']:.0f}" for v in r["per_shape"].values())
        line = f"| {lib} | {dtype} | {per} | {r['gflops']:.0f} | {r['sweep_s']:.3f} |"
        if sweeps:
            line += f" {sweeps[0] / r['sweep_s']:.2f} | {sweeps[1] / r['sweep_s']:.1f} |"
        lines.append(line)
    if skipped:
        lines += ["", "Not timed: " + "; ".join(skipped) + "."]
    if sweeps:
        lines += [
            "",
            f"Measured sweeps (`{MODELS[name][0]}`, first row, one core each): ours "
            f"{sweeps[0]:.3f} s, genlm-control {sweeps[1]:.3f} s (ratio "
            f"{sweeps[1] / sweeps[0]:.1f}x). 'genlm / floor' is the largest ratio any "
            "implementation could reach against that genlm-control time at each product speed.",
        ]
    return lines + [""]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="embedded,gpt2-small")
    p.add_argument("--n", type=int, default=64, help="particles (rows of each product)")
    p.add_argument("--T", type=int, default=32, help="generated tokens")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=str(RESULTS / "bench_matmul_floor.md"))
    args = p.parse_args(argv)
    _single_thread()
    body = [line for name in args.models.split(",") for line in model_section(name, args)]
    lines = [
        f"# bench_matmul_floor ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
        f"{_cpu_name()}, one thread pinned to one core, load average "
        f"{os.getloadavg()[0]:.1f} at the end)",
        "",
        f"Each product `[N, k] x [k, m]` timed alone after warm-up (median of {args.reps}); the "
        "floor is the sum over one sweep's products (attention over the cache, sampling and the "
        "potentials left out). The sweep times come from `bench_genlm_control.py` results: "
        "compare them with floors measured on the same machine.",
        "",
        *body,
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
