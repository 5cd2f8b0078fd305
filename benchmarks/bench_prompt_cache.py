"""The prompt's KV cache stored once for all particles (``CausalLM.share_prompt``, the default)
against one copy per particle (``share_prompt = False``, the layout before), in one run.

Same model (the embedded default: 4 layers, 2 KV heads of 64, float32; ``--model`` for a local
checkpoint), same prompt of P tokens (a repeated line of verse, cut to P tokens), T = 32 new
tokens, N particles, a soft potential with ESS resampling at 1.0 (every step resamples, so the cache
reorder is on every step). Reported per layout:

- KV cache memory per particle (``cache_bytes_per_particle``) and the shared part, counted once;
- one cache reorder ``reorder_state(state, ancestors)`` (jitted, median over repeats);
- the whole SMC sweep (median over repeats after a warm-up call; compile time separately).

One core: both layouts run in this process, pinned to one CPU (``os.sched_setaffinity``).

Usage: python benchmarks/bench_prompt_cache.py [--quick] [--model PATH] [--n 64]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lm_inference
from lm_inference import Target, smc

OUT = Path(__file__).parent / "results" / "bench_prompt_cache.md"
T = 32


def median_time(fn, reps):
    ts = []
    for i in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(i + 1))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def potential(s):
    """``log phi = -0.2 #{t: s_t < 100}``: a soft potential, so log Z is not trivially 0."""
    return -0.2 * jnp.sum(s < 100).astype(jnp.float32)


def layouts(lm):
    return {"shared": lm, "copied": lm.replace(share_prompt=False)}


def measure(lm, prompt, n, reps):
    p = prompt.shape[0]
    _, cache = lm.prefill(lm.params, prompt[None], jnp.ones((1, p), jnp.int32), p + T)
    state = lm.broadcast_state(cache, n, p)
    reorder = jax.jit(lm.reorder_state)
    anc = lambda i: jax.random.randint(jax.random.key(i), (n,), 0, n)  # noqa: E731
    jax.block_until_ready(reorder(state, anc(0)))
    t_reorder = median_time(lambda i: reorder(state, anc(i)), 20 * reps)
    tg = Target(lm, prompt, T, potential, eos_token_id=-1)
    t0 = time.perf_counter()
    jax.block_until_ready(smc(jax.random.key(0), tg, n, ess_threshold=1.0).log_Z)
    first = time.perf_counter() - t0
    t_smc = median_time(lambda i: smc(jax.random.key(i), tg, n, ess_threshold=1.0).log_Z, reps)
    return {
        "per_particle": lm.cache_bytes_per_particle(p + T, p),
        "shared": lm.cache_bytes_shared(p),
        "reorder": t_reorder,
        "smc": t_smc,
        "compile": first - t_smc,
        "log_Z": float(smc(jax.random.key(7), tg, n, ess_threshold=1.0).log_Z),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=64)
    a = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    lm = lm_inference.load(a.model)
    reps = 3 if a.quick else 5
    limit = lm.max_positions - T
    lengths = [16, 64] if a.quick else [16, 64, 128, min(224, limit)]
    text = "ROMEO.\nWhat say you, my lord, to the king and to his queen?\n" * 40
    ids = np.asarray(lm.tokenizer(text)["input_ids"], np.int32)
    lines = [
        "# Prompt KV cache: one shared copy against one copy per particle",
        "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, one pinned core, "
        f"{a.model or 'embedded default model'}, N = {a.n}, T = {T}, resampling every step. "
        "Memory in KiB; times in ms (median after warm-up); ratio = copied / shared.",
        "",
        "| P | KiB / particle copied | KiB / particle shared | shared once KiB | reorder copied ms | "
        "reorder shared ms | reorder ratio | smc copied ms | smc shared ms | smc ratio | "
        "compile copied / shared s | log Z copied / shared |",
        "|" + "---|" * 12,
    ]
    for p in lengths:
        prompt = jnp.asarray(ids[:p])
        r = {k: measure(m, prompt, a.n, reps) for k, m in layouts(lm).items()}
        c, s = r["copied"], r["shared"]
        lines.append(
            f"| {p} | {c['per_particle'] / 1024:.1f} | {s['per_particle'] / 1024:.1f} | "
            f"{s['shared'] / 1024:.1f} | {1e3 * c['reorder']:.3f} | {1e3 * s['reorder']:.3f} | "
            f"{c['reorder'] / s['reorder']:.2f} | {1e3 * c['smc']:.1f} | {1e3 * s['smc']:.1f} | "
            f"{c['smc'] / s['smc']:.2f} | {c['compile']:.2f} / {s['compile']:.2f} | "
            f"{c['log_Z']:.4f} / {s['log_Z']:.4f} |"
        )
        print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
