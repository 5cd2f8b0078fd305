"""Batched KV-cached decoding: ``lm_inference.sample`` vs transformers' ``generate`` (torch).

Same random-weight model (GPT-2-small sized: 12 layers, 768 wide, vocabulary 50257, 124M
parameters; ``--quick``: 4 layers, 256 wide), same prompt (16 tokens), same batch of K sequences,
64 new tokens each, multinomial sampling from the full softmax (no top-k), float32, EOS disabled so
every sequence has 64 tokens. Times are medians over repeats after a warm-up call (our compile time
reported separately); tokens/s counts new tokens (K x 64). torch uses as many threads as JAX's CPU
backend sees cores. The KV cache memory per particle is printed.

Usage: python benchmarks/bench_lm_decode.py [--quick] [--ks 1,16,64,256]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np

import lm_inference

OUT = Path(__file__).parent / "results" / "bench_lm_decode.md"
PROMPT_LEN, NEW = 16, 64


def build_checkpoint(quick: bool) -> tuple[str, object]:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    width, layers = (256, 4) if quick else (768, 12)
    cfg = GPT2Config(n_embd=width, n_layer=layers, n_head=width // 64, n_positions=1024)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    folder = tempfile.mkdtemp(prefix="bench_gpt2_")
    model.save_pretrained(folder)
    return folder, model


def run_ours(lm, prompt, k, seeds):
    s = lm_inference.sample(
        jax.random.key(next(seeds)), lm, prompt, k, max_new_tokens=NEW, eos_token_id=-1
    )
    s.tokens.block_until_ready()


def run_generate(model, gen, prompt, k):
    import torch

    ids = torch.tensor(np.repeat(prompt[None], k, 0), dtype=torch.long)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            generation_config=gen,
        )
    assert out.shape == (k, PROMPT_LEN + NEW)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ks", default=None)
    args = p.parse_args(argv)
    ks = [int(k) for k in (args.ks or ("1,16" if args.quick else "1,16,64,256")).split(",")]
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    folder, model = build_checkpoint(args.quick)
    lm = lm_inference.load(folder)
    n_params = sum(x.size for x in jax.tree.leaves(lm.params))
    prompt = np.random.RandomState(0).randint(0, lm.vocab_size, PROMPT_LEN).astype(np.int32)
    gen = model.generation_config
    gen.update(
        do_sample=True,
        top_k=0,
        top_p=1.0,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        eos_token_id=None,
        pad_token_id=0,
    )

    rows = []
    for k in ks:
        repeats = 3 if k >= 64 else 5
        seeds = iter(range(1, 100))
        ours = partial(run_ours, lm, prompt, k, seeds)
        t0 = time.perf_counter()
        ours()
        compile_s = time.perf_counter() - t0
        t_ours = timed(ours, repeats)
        theirs = partial(run_generate, model, gen, prompt, k)
        theirs()  # warm-up
        t_hf = timed(theirs, repeats)
        rows.append((k, t_ours, t_hf, compile_s))
        print(
            f"K={k:4d}: ours {k * NEW / t_ours:9.1f} tok/s ({t_ours:.3f} s), generate "
            f"{k * NEW / t_hf:9.1f} tok/s ({t_hf:.3f} s), speed-up {t_hf / t_ours:.2f}x, "
            f"our compile {compile_s:.1f} s",
            flush=True,
        )

    cache_bytes = lm.cache_bytes_per_particle(PROMPT_LEN + NEW)
    lines = [
        "# bench_lm_decode",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{threads} CPU threads, jax {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__}; no GPU lent in this run. quick={args.quick}",
        "",
        f"Random GPT-2 ({lm.num_layers} layers, width {lm.hidden_size}, vocab {lm.vocab_size}, "
        f"{n_params / 1e6:.1f}M parameters), prompt {PROMPT_LEN} tokens, {NEW} new tokens per "
        "sequence, multinomial sampling, float32. Median wall time after warm-up.",
        "",
        "| K | lm_inference.sample tok/s | generate tok/s | speed-up (generate time / ours) "
        "| our compile (s) |",
        "|---|---|---|---|---|",
    ]
    for k, t_ours, t_hf, c in rows:
        lines.append(
            f"| {k} | {k * NEW / t_ours:.1f} | {k * NEW / t_hf:.1f} | {t_hf / t_ours:.2f} | {c:.1f} |"
        )
    lines += [
        "",
        f"KV cache per particle ({PROMPT_LEN + NEW} positions, float32): "
        f"{cache_bytes / 2**20:.2f} MiB ({cache_bytes} bytes); bfloat16 halves it.",
    ]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
