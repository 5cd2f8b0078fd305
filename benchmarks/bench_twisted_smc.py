"""Twisted SMC for LMs: per-token overhead vs plain batched ancestral sampling (same model, same
particles, KV cache), and bound quality (upper - lower gap) for no-twist vs CTL twists.

Model: the embedded default model (``lm_inference.load()``) when present, else a tabular LM (then
the overhead ratio only measures the SMC bookkeeping around a trivially cheap model).
Times: median over repeats after compilation (compile reported separately). No GPU here.

Usage: python benchmarks/bench_twisted_smc.py [--quick]
"""

import argparse
import datetime
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lm_inference
from lm_inference import potentials
from lm_inference.base import broadcast_cache
from lm_inference.bounds import bidirectional_bounds, rejection_samples
from lm_inference.target import Target
from lm_inference.twist_training import train_twist
from lm_inference.twisted_smc import smc
from lm_inference.twists import head_twist


def load():
    try:
        return lm_inference.load(), "embedded default model"
    except Exception as e:  # noqa: BLE001
        from lm_inference.tabular import TabularLM

        return TabularLM(jax.random.key(0), vocab_size=64, max_positions=128), f"tabular LM ({e})"


def ancestral(lm, prompt, T, N):
    """Plain batched ancestral sampling with a KV cache (the baseline)."""
    P = prompt.shape[0]

    @jax.jit
    def run(key, params):
        out, cache = lm.prefill(params, prompt[None], jnp.ones((1, P), jnp.int32), P + T)
        cache = broadcast_cache(cache, N)
        out = jax.tree.map(lambda x: jnp.broadcast_to(x, (N,) + x.shape[1:]), out)

        def body(carry, k):
            out, cache = carry
            s = jax.random.categorical(k, out.logits.astype(jnp.float32)).astype(jnp.int32)
            out, cache = lm.decode_step(params, s, cache)
            return (out, cache), s

        _, toks = jax.lax.scan(body, (out, cache), jax.random.split(key, T))
        return toks.T

    return run


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
    args = p.parse_args(argv)
    lm, name = load()
    T = 16 if args.quick else 32
    reps = 5 if args.quick else 10
    prompt = jnp.asarray([0, 1], jnp.int32) if lm.tokenizer is None else None
    target = Target(lm, prompt if prompt is not None else "Once upon a time", T)
    lines = [
        f"# bench_twisted_smc ({datetime.date.today()}, {platform.machine()}, "
        f"{jax.devices()[0].platform}; no GPU here)",
        "",
        f"Model: {name}",
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
        base = ancestral(lm, target.prompt_ids, T, N)
        tb, _ = timeit(lambda base=base: base(jax.random.key(0), lm.params), reps)
        t0, c0 = timeit(lambda N=N: smc(jax.random.key(0), target, N).samples, reps)
        t1, _ = timeit(lambda N=N: smc(jax.random.key(0), target, N, twist=tw).samples, reps)
        lines.append(
            f"| {N} | {1e3 * tb / T:.3f} | {1e3 * t0 / T:.3f} | {t0 / tb:.2f} | "
            f"{1e3 * t1 / T:.3f} | {t1 / tb:.2f} | {c0:.1f} |"
        )

    # bound quality on a rare event
    Tb = 6 if args.quick else 10
    tok = 5 if lm.tokenizer is None else lm.tokenizer(" dog")["input_ids"][0]
    rare = Target(lm, target.prompt_ids, Tb, potentials.contains_token(tok))
    runs = 8 if args.quick else 16
    ex = rejection_samples(jax.random.key(1), rare, runs, batch=1024)
    ctl = train_twist(
        jax.random.key(2), rare, "ctl", num_steps=100 if args.quick else 300, progress=False
    ).twist
    lines += [
        "",
        f"## Bound gap (upper - lower), contains-token potential, T={Tb}, {runs} runs",
        "",
        "| N | no twist: lower | upper | gap | CTL: lower | upper | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for N in (32, 512):
        b0 = bidirectional_bounds(jax.random.key(3), rare, ex, N)
        b1 = bidirectional_bounds(jax.random.key(3), rare, ex, N, twist=ctl)
        lines.append(
            f"| {N} | {b0.lower.mean:.3f} | {b0.upper.mean:.3f} | {b0.gap:.3f} | "
            f"{b1.lower.mean:.3f} | {b1.upper.mean:.3f} | {b1.gap:.3f} |"
        )
    lines += [
        "",
        "LLaMPPL: not run (see docs/twisted_smc.md: needs a local HF model and "
        "`pip install llamppl`, which pulls genlm-backend, bitsandbytes, numba).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "bench_twisted_smc.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
