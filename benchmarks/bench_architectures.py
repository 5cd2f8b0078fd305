"""Every supported architecture at one size: ``lm_inference.sample`` and ``smc`` per token against
transformers' ``generate`` (torch), with compile time and KV memory per particle.

Each model is a random-weight transformers model of the same size (hidden 256, 4 layers, 4 heads,
2 KV heads where the architecture has grouped-query attention, MLP 688, vocabulary 4096), saved
with ``save_pretrained`` and loaded by ``lm_inference.load``; the distinctive features of each
family are on (Gemma's soft-caps and sliding layers, Phi-3's partial rotary, NeoX's parallel
residual, SmolLM3's no-rope layers, ...). Same prompt (16 tokens), N sequences of T new tokens,
multinomial sampling from the full softmax, EOS disabled, float32. Both sides run on one pinned
core (one XLA / torch thread). Times are medians over repeats after a warm-up call; our first
call (trace and compile) is reported separately. ``smc`` is the twisted-SMC sweep with no
potential and no twist (ESS resampling at N / 2), the cost every LM target pays.

Usage: python benchmarks/bench_architectures.py [--quick] [--n 16] [--T 32] [--archs a,b]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "bench_architectures.md"
PROMPT_LEN = 16
V = 4096
BASE = dict(
    vocab_size=V,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=None,
)


def configs():
    """``model_type -> config factory`` at the benchmark's size (transformers' config classes)."""
    import transformers as T

    gqa = dict(BASE, num_key_value_heads=2)
    return {
        "llama": lambda: T.LlamaConfig(**gqa),
        "mistral": lambda: T.MistralConfig(**gqa, sliding_window=64),
        "qwen2": lambda: T.Qwen2Config(**gqa, tie_word_embeddings=True),
        "qwen3": lambda: T.Qwen3Config(**gqa, head_dim=64),
        "olmo2": lambda: T.Olmo2Config(**gqa),
        "smollm3": lambda: T.SmolLM3Config(**gqa, no_rope_layer_interval=2),
        "gemma2": lambda: T.Gemma2Config(
            **gqa, head_dim=64, sliding_window=64, attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0, query_pre_attn_scalar=64,
        ),
        "gemma3_text": lambda: T.Gemma3TextConfig(
            **gqa, head_dim=64, sliding_window=64, query_pre_attn_scalar=64
        ),
        "phi3": lambda: T.Phi3Config(**gqa, partial_rotary_factor=0.5),
        "gpt_neox": lambda: T.GPTNeoXConfig(
            **{k: v for k, v in BASE.items() if k != "pad_token_id"},
            rotary_pct=0.25, use_parallel_residual=True,
        ),
        "gpt2": lambda: T.GPT2Config(
            vocab_size=V, n_embd=256, n_layer=4, n_head=4, n_inner=688, n_positions=256,
            bos_token_id=0, eos_token_id=1,
        ),
        "gpt_neo": lambda: T.GPTNeoConfig(
            vocab_size=V, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688,
            max_position_embeddings=256, attention_types=[[["global", "local"], 2]],
            window_size=64, bos_token_id=0, eos_token_id=1,
        ),
    }  # fmt: skip


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_one(name, factory, n: int, T: int, repeats: int) -> dict:
    import jax
    import numpy as np
    import torch
    import transformers

    import lm_inference
    from lm_inference.target import Target
    from lm_inference.twisted_smc import smc

    torch.manual_seed(0)
    cfg = factory()
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    folder = tempfile.mkdtemp(prefix=f"bench_{name}_")
    model.save_pretrained(folder)
    lm = lm_inference.load(folder)
    params = sum(x.size for x in jax.tree.leaves(lm.params))
    prompt = np.random.RandomState(0).randint(2, V, PROMPT_LEN).astype(np.int32)
    seeds = iter(range(1, 10_000))

    def ours():
        s = lm_inference.sample(
            jax.random.key(next(seeds)), lm, prompt, n, max_new_tokens=T, eos_token_id=-1
        )
        s.tokens.block_until_ready()

    target = Target(lm, prompt, T, eos_token_id=-1)

    def ours_smc():
        jax.block_until_ready(smc(jax.random.key(next(seeds)), target, n).log_Z)

    gen = model.generation_config
    gen.update(
        do_sample=True, top_k=0, top_p=1.0, max_new_tokens=T, min_new_tokens=T,
        eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    ids = torch.tensor(np.repeat(prompt[None], n, 0), dtype=torch.long)

    def theirs():
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
        assert out.shape == (n, PROMPT_LEN + T)

    row = dict(name=name, params=params, cache=lm.cache_bytes_per_particle(PROMPT_LEN + T))
    for key, fn in (("sample", ours), ("smc", ours_smc)):
        t0 = time.perf_counter()
        fn()
        row[f"{key}_compile"] = time.perf_counter() - t0
        row[key] = median_time(fn, repeats)
    theirs()  # warm-up
    row["generate"] = median_time(theirs, repeats)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 4, T = 8, 2 repeats")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--archs", default=None, help="comma-separated model types (default: all)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    n, T, repeats = (4, 8, 2) if args.quick else (args.n, args.T, 5)
    flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-1:])  # one core for both sides
    import jax
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    factories = configs()
    names = args.archs.split(",") if args.archs else list(factories)
    load = os.getloadavg()[0]
    rows = []
    for name in names:
        r = bench_one(name, factories[name], n, T, repeats)
        rows.append(r)
        print(
            f"{name:12s} sample {r['sample'] * 1e3:8.1f} ms  smc {r['smc'] * 1e3:8.1f} ms  "
            f"generate {r['generate'] * 1e3:8.1f} ms  generate/sample "
            f"{r['generate'] / r['sample']:.2f}",
            flush=True,
        )
    per_tok = 1e3 / (n * T)
    lines = [
        "# bench_architectures",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, one "
        f"pinned core per side (load average {load:.1f} at the start), jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}, transformers "
        f"{transformers.__version__}; no GPU lent. quick={args.quick}",
        "",
        f"Random-weight models of one size (hidden 256, 4 layers, 4 heads, MLP 688, vocabulary "
        f"{V}), prompt {PROMPT_LEN} tokens, N = {n} sequences of T = {T} new tokens, multinomial "
        "sampling, float32. ms / token = median wall time / (N T), after a warm-up call.",
        "",
        "| model_type | parameters | generate ms/token | sample ms/token | generate / sample "
        "| smc ms/token | smc / sample | compile sample s | compile smc s | KV KiB / particle |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['generate'] * per_tok:.3f} | "
            f"{r['sample'] * per_tok:.3f} | {r['generate'] / r['sample']:.2f} | "
            f"{r['smc'] * per_tok:.3f} | {r['smc'] / r['sample']:.2f} | "
            f"{r['sample_compile']:.1f} | {r['smc_compile']:.1f} | {r['cache'] / 1024:.0f} |"
        )
    out = (
        Path(args.out)
        if args.out
        else OUT.with_name(OUT.stem + ("_quick" if args.quick else "") + OUT.suffix)
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
