"""Compile time and step time against depth: decoder layers under ``lax.scan`` vs unrolled.

Random-weight tiny Llama (hidden 128, 4 heads / 2 KV heads, MLP 256, vocabulary 512) and GPT-2
(hidden 128, 4 heads, vocabulary 512) at L = 2, 4, 8, 16, 32 layers, float32 on CPU, batch 8,
prompt 16, cache 64. Three implementations, each (architecture, depth) in a fresh process:

- ``head``: the committed tree (``git archive HEAD``): a Python loop over layers, a per-layer
  cache list;
- ``unrolled``: this tree with ``layers.SCAN_LAYERS = False`` (stacked cache, Python loop);
- ``scan``: this tree as shipped (one ``lax.scan`` over stacked layer states).

Per function (``prefill``, ``decode_step``, and a jitted 16-token greedy decode loop under
``lax.scan``, as ``sampling`` runs it): trace + lower and XLA compile time (wall and process CPU
seconds: CPU time is less disturbed by other load), and the steady-state time per call / token
(median of repeated calls). Writes ``results/bench_compile_depth.md`` (``--quick``: L = 2, 8, 32
and no ``head``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B, P, S, GEN = 8, 16, 64, 16


def _config(arch: str, layers: int):
    import transformers as T

    if arch == "llama":
        return T.LlamaConfig(
            vocab_size=512,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
        )
    return T.GPT2Config(vocab_size=512, n_embd=128, n_layer=layers, n_head=4, n_positions=128)


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _steady(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds per call, and mean process CPU seconds per call."""
    import jax

    jax.block_until_ready(fn())
    times = []
    cpu = time.process_time()
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), (time.process_time() - cpu) / repeats


def worker(impl: str, arch: str, layers: int) -> dict:
    import jax
    import jax.numpy as jnp

    import lm_inference
    from lm_inference.loading import CausalLM
    from lm_inference.models import module_class

    if impl == "unrolled":
        from lm_inference.models import layers as layers_module

        layers_module.SCAN_LAYERS = False
    config = _config(arch, layers)
    lm = CausalLM(module_class(config)(config, jnp.float32), config)
    leaves, treedef = jax.tree.flatten(lm.params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    params = jax.tree.unflatten(
        treedef,
        [0.05 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)],
    )
    ids = jax.random.randint(jax.random.key(1), (B, P), 0, config.vocab_size)
    mask = jnp.ones((B, P), jnp.int32)
    jax.jit(lambda x: x + 1)(1.0).block_until_ready()  # backend start-up, outside the timings

    def gen(params, cache, tok):
        def body(carry, _):
            cache, tok = carry
            out, cache = lm.decode_step(params, tok, cache)
            nxt = jnp.argmax(out.logits, -1).astype(jnp.int32)
            return (cache, nxt), nxt

        return jax.lax.scan(body, (cache, tok), None, length=GEN)[1]

    row = {"impl": impl, "arch": arch, "layers": layers, "module": lm_inference.__file__}
    _, cache = jax.jit(lm.prefill, static_argnums=3)(params, ids, mask, S)
    tok = jnp.zeros((B,), jnp.int32)
    cases = {
        "prefill": (jax.jit(lm.prefill, static_argnums=3), (params, ids, mask, S), 20),
        "decode": (jax.jit(lm.decode_step), (params, tok, cache), 50),
        "gen": (jax.jit(gen), (params, cache, tok), 10),
    }
    for name, (f, args, repeats) in cases.items():
        lowered, lw, lc = _timed(lambda f=f, args=args: f.lower(*args))
        compiled, cw, cc = _timed(lowered.compile)
        dyn = args[:3] if name == "prefill" else args
        step, step_cpu = _steady(lambda compiled=compiled, dyn=dyn: compiled(*dyn), repeats)
        per = GEN if name == "gen" else 1
        row[name] = {
            "lower_s": lw,
            "compile_s": cw,
            "total_cpu_s": lc + cc,
            "step_ms": 1e3 * step / per,
            "step_cpu_ms": 1e3 * step_cpu / per,
        }
    return row


def _run(impl: str, arch: str, layers: int, head_tree: str | None) -> dict:
    env = dict(os.environ)
    if impl == "head":
        env["PYTHONPATH"] = head_tree + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, arch, str(layers)]
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{impl} {arch} L={layers} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    want = head_tree if impl == "head" else str(ROOT)
    if not row["module"].startswith(want):
        raise RuntimeError(f"{impl} imported lm_inference from {row['module']}, not {want}")
    return row


def _table(rows: list[dict], fn: str) -> list[str]:
    impls = [i for i in ("head", "unrolled", "scan") if any(r["impl"] == i for r in rows)]
    by = {(r["impl"], r["arch"], r["layers"]): r[fn] for r in rows}
    ref = "head" if "head" in impls else "unrolled"
    lines = [
        "| arch | L | "
        + " | ".join(f"{i} lower+compile s (CPU s)" for i in impls)
        + " | "
        + " | ".join(f"{i} ms (CPU ms)" for i in impls)
        + f" | compile CPU {ref}/scan | step CPU scan/{ref} |",
        "|---|---|" + "---|" * (2 * len(impls) + 2),
    ]
    for arch in sorted({r["arch"] for r in rows}):
        for n in sorted({r["layers"] for r in rows if r["arch"] == arch}):
            cells = [by[(i, arch, n)] for i in impls]
            comp = [f"{c['lower_s'] + c['compile_s']:.2f} ({c['total_cpu_s']:.2f})" for c in cells]
            step = [f"{c['step_ms']:.2f} ({c['step_cpu_ms']:.2f})" for c in cells]
            r, s = by[(ref, arch, n)], by[("scan", arch, n)]
            ratio_c = r["total_cpu_s"] / s["total_cpu_s"]
            ratio_s = s["step_cpu_ms"] / r["step_cpu_ms"]
            lines.append(
                f"| {arch} | {n} | "
                + " | ".join(comp + step)
                + f" | {ratio_c:.1f}x | {ratio_s:.2f} |"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", nargs=3, metavar=("IMPL", "ARCH", "LAYERS"))
    args = ap.parse_args()
    if args.worker:
        impl, arch, n = args.worker
        print(json.dumps(worker(impl, arch, int(n))))
        return
    depths = [2, 8, 32] if args.quick else [2, 4, 8, 16, 32]
    impls = ["unrolled", "scan"] if args.quick else ["head", "unrolled", "scan"]
    rows = []
    with tempfile.TemporaryDirectory() as head_tree:
        if "head" in impls:  # the committed lm_inference, read with git archive (no git state)
            archive = subprocess.run(
                ["git", "archive", "HEAD", "lm_inference"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", head_tree], input=archive, check=True)
        for arch in ("llama", "gpt2"):
            for n in depths:
                for impl in impls:
                    rows.append(_run(impl, arch, n, head_tree))
                    r = rows[-1]
                    print(
                        f"{impl:9s} {arch:6s} L={n:3d}  "
                        + "  ".join(
                            f"{k} {r[k]['lower_s'] + r[k]['compile_s']:.2f}s {r[k]['step_ms']:.3f}ms"
                            for k in ("prefill", "decode", "gen")
                        ),
                        flush=True,
                    )
    import jax

    head = "HEAD (`git archive HEAD`)" if "head" in impls else "—"
    md = [
        "# Compile time against depth: layers under `lax.scan` vs unrolled",
        "",
        f"`python benchmarks/bench_compile_depth.py{' --quick' if args.quick else ''}` — JAX "
        f"{jax.__version__}, CPU ({os.cpu_count()} cores, shared with other jobs: wall times are "
        "noisy, CPU seconds less so). Random-weight models, float32, batch 8, prompt 16, cache 64; "
        f"each (implementation, architecture, depth) in a fresh process. Implementations: head = "
        f"{head}, unrolled = this tree with `SCAN_LAYERS = False`, scan = this tree.",
        "",
        "Columns: trace + lower + XLA compile of the first call, wall seconds (process CPU "
        "seconds); steady-state time per call (per token for `gen`): median wall ms (mean "
        "process CPU ms, summed over XLA's threads); the ratios, from CPU time: compile CPU "
        "seconds of the reference (head, or unrolled under --quick) over scan's, and step CPU "
        "time of scan over the reference's.",
        "",
    ]
    titles = {
        "prefill": "`prefill` (B = 8, P = 16, cache 64)",
        "decode": "`decode_step` (one token, B = 8), jitted alone",
        "gen": f"{GEN}-token greedy decode under `lax.scan` (per token), as `sampling` runs it",
    }
    for fn, title in titles.items():
        md += [f"## {title}", "", *_table(rows, fn), ""]
    out = ROOT / "benchmarks" / "results" / "bench_compile_depth.md"
    out.write_text("\n".join(md))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
