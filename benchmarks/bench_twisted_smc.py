"""Twisted SMC for LMs: per-token overhead vs plain batched ancestral sampling (same model, same
particles, KV cache), and bound quality (upper - lower gap) for no-twist vs CTL twists.

Model: the embedded default model (``lm_inference.load()``, or ``--model PATH``). The baseline is
``lm_inference.sample`` (same prompt prefill, KV cache and categorical sampler). Times: median
over repeats after compilation (compile reported separately).

Usage: python benchmarks/bench_twisted_smc.py [--quick]
"""

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import lm_inference
from lm_inference import potentials
from lm_inference.bounds import bidirectional_bounds, rejection_samples
from lm_inference.target import Target
from lm_inference.twist_training import train_twist
from lm_inference.twisted_smc import smc
from lm_inference.twists import head_twist


def ancestral(lm, prompt, T, N):
    """Plain batched ancestral sampling with a KV cache (the baseline): ``lm_inference.sample``."""
    return lambda key: lm_inference.sample(key, lm, prompt, N, max_new_tokens=T).tokens


def timeit(fn, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), compile_s


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default=None)
    args = p.parse_args(argv)
    lm = lm_inference.load(args.model)
    T = 16 if args.quick else 32
    reps = 5 if args.quick else 10
    target = Target(lm, "ROMEO.\n", T)
    lines = [
        f"# bench_twisted_smc ({datetime.date.today()}, {platform.machine()}, "
        f"{jax.devices()[0].platform}, {os.cpu_count()} cores)",
        "",
        f"Model: {lm}",
        "",
    ]
    lines += [
        "## Per-token time: twisted SMC vs ancestral sampling (same N, T)",
        "",
        "| N | ancestral ms/token | SMC (no twist) ms/token | ratio | twisted SMC (MLP head) "
        "ms/token | ratio | compile s (SMC) |",
        "|---|---|---|---|---|---|---|",
    ]
    tw = head_twist(jax.random.key(0), lm.hidden_size, lm.vocab_size, T)
    for N in [16, 64] if args.quick else [16, 64, 256]:
        base = ancestral(lm, np.asarray(target.prompt_ids), T, N)
        tb, _ = timeit(lambda base=base: base(jax.random.key(0)), reps)
        t0, c0 = timeit(lambda N=N: smc(jax.random.key(0), target, N).samples, reps)
        t1, _ = timeit(lambda N=N: smc(jax.random.key(0), target, N, twist=tw).samples, reps)
        lines.append(
            f"| {N} | {1e3 * tb / T:.3f} | {1e3 * t0 / T:.3f} | {t0 / tb:.2f} | "
            f"{1e3 * t1 / T:.3f} | {t1 / tb:.2f} | {c0:.1f} |"
        )

    # bound quality on a rare event (the quickstart's target)
    Tb = 8
    tok = lm.tokenizer(" love")["input_ids"][0]
    rare = Target(lm, target.prompt_ids, Tb, potentials.contains_token(tok))
    runs = 8 if args.quick else 32
    m = 32768
    hits = np.asarray(smc(jax.random.key(9), rare, m, ess_threshold=0.0).log_potential) > -np.inf
    p_hat = float(hits.mean())
    ex = rejection_samples(jax.random.key(1), rare, runs, batch=2048)
    steps = 200 if args.quick else 400
    head = head_twist(jax.random.key(5), lm.hidden_size, lm.vocab_size, Tb, prefix_size=64)
    t0 = time.perf_counter()
    ctl = train_twist(jax.random.key(2), rare, "ctl", twist=head, num_steps=steps, progress=False)
    train_s = time.perf_counter() - t0
    lines += [
        "",
        f"## Bounds on a rare event: phi = 1[' love' in s], T={Tb}, {runs} runs per cell",
        "",
        f"Reference: log Z = {np.log(p_hat):.3f} +- {np.sqrt((1 - p_hat) / (p_hat * m)):.3f} "
        f"(plain Monte Carlo, {m} model samples). CTL twist: MLP head + embedding bag "
        f"(prefix_size=64), {steps} steps of 64 sequences, {train_s:.0f} s including compilation. "
        "Lower/upper: mean SMC / conditional-SMC bounds over runs; -inf: runs whose lower bound "
        "is -inf (no particle satisfies phi).",
        "",
        "| N | no twist: lower | -inf runs | upper | CTL: lower | -inf runs | upper | CTL gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for N in (32, 512):
        b0 = bidirectional_bounds(jax.random.key(3), rare, ex, N)
        b1 = bidirectional_bounds(jax.random.key(3), rare, ex, N, twist=ctl.twist)
        n0 = int(np.sum(~np.isfinite(b0.lower.values)))
        n1 = int(np.sum(~np.isfinite(b1.lower.values)))
        lines.append(
            f"| {N} | {b0.lower.mean:.3f} | {n0} | {b0.upper.mean:.3f} | "
            f"{b1.lower.mean:.3f} | {n1} | {b1.upper.mean:.3f} | {b1.gap:.3f} |"
        )
    lines += ["", "LLaMPPL: see `bench_llamppl.md` (`benchmarks/bench_llamppl.py`)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "bench_twisted_smc.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
