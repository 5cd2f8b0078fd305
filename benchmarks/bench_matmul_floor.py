"""The matrix-product floor of a GPT-2-small-sized SMC sweep on one CPU core.

The 10x goal against genlm-control on the 124M model (issue: programmable LM targets) asks for
the N = 64, T = 32 sweep in a tenth of genlm-control's time. The sweep is compute-bound: per
generated token a forward through GPT-2 small (12 layers, d = 768, MLP 3072, vocabulary 50257)
runs five matrix products per layer plus the tied output projection, about
$2 \\cdot 124\\mathrm{M}$ FLOP. This script times each of those products at the sweep's shape
``[N, d_in] x [d_in, d_out]`` (one decode step of N particles) after warm-up, in XLA and in
torch, both float32 and bfloat16, one thread, and sums them into the time one sweep's matrix
products take at that speed: the floor below which no implementation on this core goes.

It reads our and genlm-control's measured sweep times from
``results/bench_genlm_control_gpt2-small-random.json`` (written by ``bench_genlm_control.py`` in
one run on the same machine) and prints the ratio each floor would allow. Attention over the KV
cache (at most 36 positions here) and the prefill are left out: both are small at T = 32.

    python benchmarks/bench_matmul_floor.py  # writes results/bench_matmul_floor.md
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# GPT-2 small: per layer c_attn [768, 2304], attn c_proj [768, 768], mlp c_fc [768, 3072],
# mlp c_proj [3072, 768]; then the tied output projection [768, 50257].
LAYERS, D, MLP, VOCAB = 12, 768, 3072, 50257
LAYER_SHAPES = [(D, 3 * D), (D, D), (D, MLP), (MLP, D)]
HEAD_SHAPE = (D, VOCAB)


def _single_thread() -> None:
    flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up (compilation for XLA)
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def sweep_floor(timer, n: int, T: int, dtype: str, reps: int) -> dict:
    """Seconds of the sweep's matrix products at the speed ``timer`` measures, and GFLOP/s."""
    per_shape = {}
    for k, m in [*LAYER_SHAPES, HEAD_SHAPE]:
        t = timer(n, k, m, dtype, reps)
        if t is None:
            return {}
        per_shape[f"{k}x{m}"] = {"s": t, "gflops": 2 * n * k * m / t / 1e9}
    step = LAYERS * sum(per_shape[f"{k}x{m}"]["s"] for k, m in LAYER_SHAPES)
    step += per_shape[f"{HEAD_SHAPE[0]}x{HEAD_SHAPE[1]}"]["s"]
    flop = T * 2 * n * (LAYERS * sum(k * m for k, m in LAYER_SHAPES) + D * VOCAB)
    return {
        "per_shape": per_shape,
        "sweep_s": T * step,
        "gflop": flop / 1e9,
        "gflops": flop / (T * step) / 1e9,
    }


def measured_sweeps() -> tuple[float, float] | None:
    """(ours, genlm-control) median seconds from bench_genlm_control's 124M run, if present."""
    path = RESULTS / "bench_genlm_control_gpt2-small-random.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text())["rows"][0]
    return statistics.median(row[3]["times"]), statistics.median(row[4]["times"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="particles (rows of each product)")
    p.add_argument("--T", type=int, default=32, help="generated tokens")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=str(RESULTS / "bench_matmul_floor.md"))
    args = p.parse_args(argv)
    _single_thread()

    rows = []
    for lib, timer in (("XLA", time_xla), ("torch", time_torch)):
        for dtype in ("float32", "bfloat16"):
            r = sweep_floor(timer, args.n, args.T, dtype, args.reps)
            if r:
                rows.append((lib, dtype, r))
                print(f"{lib} {dtype}: {r['sweep_s']:.2f} s, {r['gflops']:.0f} GFLOP/s", flush=True)

    sweeps = measured_sweeps()
    lines = [
        f"# bench_matmul_floor ({time.strftime('%Y-%m-%d')}, {platform.machine()}, one thread "
        f"pinned to one core, load average {os.getloadavg()[0]:.1f} at the end)",
        "",
        f"GPT-2 small (12 layers, d = {D}, MLP {MLP}, V = {VOCAB}), N = {args.n} particles, "
        f"T = {args.T} tokens: {rows[0][2]['gflop']:.0f} GFLOP of matrix products per sweep. "
        f"Each product `[N, k] x [k, m]` timed alone after warm-up (median of {args.reps}); "
        "the floor is the sum over one sweep's products.",
        "",
        "| library | dtype | GFLOP/s per shape (" + ", ".join(rows[0][2]["per_shape"]) + ") "
        "| sweep GFLOP/s | floor s |" + (" ours / floor | genlm / floor |" if sweeps else ""),
        "|---|---|---|---|---|" + ("---|---|" if sweeps else ""),
    ]
    for lib, dtype, r in rows:
        per = ", ".join(f"{v['gflops']:.0f}" for v in r["per_shape"].values())
        line = f"| {lib} | {dtype} | {per} | {r['gflops']:.0f} | {r['sweep_s']:.2f} |"
        if sweeps:
            line += f" {sweeps[0] / r['sweep_s']:.2f} | {sweeps[1] / r['sweep_s']:.1f} |"
        lines.append(line)
    if sweeps:
        lines += [
            "",
            f"Measured sweeps (`bench_genlm_control_gpt2-small-random.json`, one core each): ours "
            f"{sweeps[0]:.2f} s, genlm-control AWRS {sweeps[1]:.2f} s (ratio "
            f"{sweeps[1] / sweeps[0]:.1f}x). A 10x ratio needs ours at {sweeps[1] / 10:.2f} s; "
            "the 'genlm / floor' column is the largest ratio any implementation could reach at "
            "each library's and dtype's product speed against that genlm-control time.",
        ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
