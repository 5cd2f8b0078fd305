"""LLaMPPL's "every word at most 5 letters" example: ours (``lm_inference``) vs LLaMPPL 0.2.3, on CPU.

LLaMPPL side: the ``ConstraintModel`` of LLaMPPL's ``examples/hard_constraints.py`` with this
benchmark's prompt ``"ROMEO.\\n"``, ``max_tokens = T`` (default 32), N particles (16 and 64),
systematic resampling at ``ESS < N / 2`` (and an importance-sampling run, threshold 0), float32,
one torch thread. Only the example's ``print`` per step is left out, and its six masks are built
once per model instead of once per run (they depend only on the vocabulary).

The target it defines (what our on-device version must reproduce). With ``str_vocab`` the
genlm-backend string of each token (UTF-8 decoding of its bytes; ``convert_ids_to_tokens`` for
tokens that are not valid UTF-8) and ``i = min(5, len(last word))``, where the last word is the
last item of ``text.split()`` for the decoded text generated so far (the prompt excluded; empty
text gives ``i = 0``; note a text ending in whitespace still gives the previous word), token ``v``
is allowed in state ``i`` iff it is not EOS, ``"\\n" not in v``, ``v`` has a letter or an ASCII
punctuation character, ``len(v.strip()) <= 5``, and ``not v[0].isalpha() or i + len(v) <= 5``.
The first token is constrained (``start`` observes the mask of the empty text) and so is each of
the T tokens, each observed before it is drawn: the model proposes from ``p0`` restricted to the
allowed set and the weight gains ``log p0(allowed set | prefix)``. EOS is never allowed, so every
particle has exactly T tokens and
``Z = P_p0(every one of the T tokens is allowed in its state)``,
``log Z_hat = logsumexp(log w) - log N``.

Reported per (N, threshold): the median wall time of the runs after a warm-up run (seeds 0,
1, ...), milliseconds per particle-token, and ``log Z_hat`` (mean ± standard error, median)
over those runs; the number of tokens allowed in each state, with a hash of each allowed set
(``--dump-masks FILE`` writes the sets themselves as JSON), so that an on-device version can be
checked against the host masks token for token. Configurations are interleaved (ours, then
LLaMPPL, per N). LLaMPPL side: ``CachedCausalLM.from_pretrained(model, backend='hf',
batch_size=N, timeout=0.001)``, ``lm.clear_cache()`` and ``lm.cache_kv(prompt)`` before each run
(as in ``bench_llamppl.py``).

LLaMPPL runs in its own virtual environment as a subprocess (this script with
``--llamppl-side``); it is never needed by the tests. Set it up once (from the package registry;
torch 2.13.0 is a CPU build here):

    python -m venv /tmp/llamppl-venv
    /tmp/llamppl-venv/bin/pip install llamppl==0.2.3 torch==2.13.0 transformers==5.24.0

Usage: python benchmarks/bench_llamppl_words.py [--quick] [--model PATH] [--n 16,64] [--T 32]
[--ess 0.5,0] [--repeats 5] [--llamppl-python PY] [--dump-masks FILE]
(``--llamppl-python`` defaults to ``$LLAMPPL_PYTHON``, else ``/tmp/llamppl-venv/bin/python``.)
Without LLaMPPL the script prints these setup steps and reports our side only. Our side is the
function ``ours``; it reports nothing until an on-device short-words potential exists.
"""

import argparse
import datetime
import hashlib
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
MAX_LETTERS = 5
RESULTS = Path(__file__).parent / "results"
DEFAULT_LLAMPPL_PYTHON = "/tmp/llamppl-venv/bin/python"
EMBEDDED = str(Path(__file__).resolve().parent.parent / "lm_inference" / "default_model")
SETUP = (
    "python -m venv /tmp/llamppl-venv && /tmp/llamppl-venv/bin/pip install "
    "llamppl==0.2.3 torch==2.13.0 transformers==5.24.0"
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
    m, se = mean_se(xs)
    core = f"{m:.3f} ± {se:.3f}" if math.isfinite(se) else f"{m:.3f}"
    return f"{core} (median {statistics.median(xs):.3f})"


def z_cell(a: list[float] | None, b: list[float] | None) -> str:
    """Difference of the means in standard errors."""
    if not a or not b:
        return "-"
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    if not (math.isfinite(ma) and math.isfinite(mb)):
        return "-"
    s = math.hypot(sa, sb)
    return f"{(ma - mb) / s:.1f}" if math.isfinite(s) and s > 0 else "-"


def allowed(v: str, i: int, is_eos: bool, max_letters: int = MAX_LETTERS) -> bool:
    """The example's per-token rule (``make_masks``): may token string ``v`` follow a last word
    of ``i`` characters (``i`` capped at ``max_letters``)?"""
    import string

    return (
        not is_eos
        and "\n" not in v
        and any(c.isalpha() or c in string.punctuation for c in v)
        and len(v.strip()) <= max_letters
        and (not v[0].isalpha() or i + len(v) <= max_letters)
    )


def state(text: str, max_letters: int = MAX_LETTERS) -> int:
    """The example's ``active_constraint_mask`` index for the generated text so far."""
    words = text.split()
    return min(max_letters, len(words[-1]) if words else 0)


def mask_digest(ids) -> str:
    return hashlib.sha256(",".join(map(str, sorted(ids))).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ ours (project .venv)
_OURS_LM: dict = {}


def ours(model: str, N: int, T: int, ess_threshold: float, repeats: int) -> dict | None:
    """OUR side: the same target in one jitted sweep, ``lm_inference.potentials.
    llamppl_short_words(lm, 5)`` (LLaMPPL's rule of the module docstring as an on-device state
    machine, checked against the host rule on every enumerated sequence in the tests), T tokens,
    EOS never allowed. Returns ``dict(compile_s=..., times=[...], log_Z=[...])`` (seconds; one
    entry per seed 0 .. repeats - 1, after a first compiling call).
    """
    from lm_inference import potentials

    short_words = potentials.llamppl_short_words
    import jax
    import jax.numpy as jnp

    import lm_inference
    from lm_inference.target import Target
    from lm_inference.twisted_smc import smc

    if model not in _OURS_LM:
        _OURS_LM[model] = lm_inference.load(model, dtype=jnp.float32)
    lm = _OURS_LM[model]
    target = Target(lm, PROMPT, T, short_words(lm, MAX_LETTERS))

    def once(seed):
        t0 = time.perf_counter()
        r = jax.block_until_ready(smc(jax.random.key(seed), target, N, ess_threshold=ess_threshold))
        return time.perf_counter() - t0, float(r.log_Z)

    compile_s, _ = once(repeats)  # first call: trace, compile and run
    times, log_z = zip(*(once(seed) for seed in range(repeats)), strict=True)
    return dict(compile_s=compile_s, times=list(times), log_Z=list(log_z))


# ------------------------------------------------------------------ LLaMPPL (its own venv)
def llamppl_side(args) -> dict:
    """Runs under the LLaMPPL interpreter; imports only what that venv has."""
    import asyncio
    import warnings
    from importlib.metadata import version

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    import transformers
    from llamppl import CachedCausalLM, LMContext, Model, smc_standard

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    class ConstraintModel(Model):
        """LLaMPPL's hard-constraints example (every word at most 5 letters), without its print."""

        def __init__(self, LLM, prompt, max_tokens, masks):
            super().__init__()
            self.context = LMContext(LLM, prompt)
            self.max_tokens = max_tokens
            self.masks = masks
            self.eos_token_id = LLM.tokenizer.eos_token_id

        async def start(self):
            mask = self.active_constraint_mask()
            await self.observe(self.context.mask_dist(mask), True)

        async def step(self):
            token = await self.sample(self.context.next_token())
            self.max_tokens -= 1
            if token == self.eos_token_id or self.max_tokens == 0:
                self.finish()
                return
            mask = self.active_constraint_mask()
            await self.observe(self.context.mask_dist(mask), True)

        def active_constraint_mask(self):
            string_so_far = str(self.context)
            words = string_so_far.split()
            last_word = words[-1] if len(words) > 0 else ""
            return self.masks[min(MAX_LETTERS, len(last_word))]

        def string_for_serialization(self):
            return f"{self.context}"

        def immutable_properties(self):
            return ["masks"]

    opts = {"dtype": torch.float32, "device_map": None}
    lm = CachedCausalLM.from_pretrained(
        args.model, backend="hf", batch_size=max(args.n), timeout=0.001, hf_opts=opts
    )
    eos = lm.tokenizer.eos_token_id
    prompt_ids = lm.tokenizer.encode(PROMPT)
    t0 = time.perf_counter()
    masks = {
        i: set(j for j, v in enumerate(lm.str_vocab) if allowed(v, i, j == eos))
        for i in range(MAX_LETTERS + 1)
    }
    masks_s = time.perf_counter() - t0
    if args.dump_masks:
        Path(args.dump_masks).write_text(
            json.dumps({str(i): sorted(m) for i, m in masks.items()}, indent=0)
        )

    def once(seed, N, ess, T):
        np.random.seed(seed)
        torch.manual_seed(seed)
        lm.model.batch_size = N  # the AsyncTransformer batches up to N queries per forward
        t0 = time.perf_counter()
        lm.clear_cache()  # no output reuse across runs
        lm.cache_kv(prompt_ids)
        model = ConstraintModel(lm, PROMPT, T, masks)
        particles = asyncio.run(smc_standard(model, N, ess, resampling_method="systematic"))
        elapsed = time.perf_counter() - t0
        log_w = [float(p.weight) for p in particles]
        texts = [str(p.context) for p in particles]
        bad = sum(  # every word of every returned text obeys the rule (host check)
            any(len(w) > MAX_LETTERS and w.isalpha() for w in t.split()) for t in texts
        )
        n_tok = [p.context.token_count for p in particles]
        best = texts[int(np.argmax(log_w))]
        return dict(
            time=elapsed,
            log_Z=log_mean_exp(log_w),
            alive=int(np.isfinite(log_w).sum()),
            tokens=[min(n_tok), max(n_tok)],
            long_alpha_words=int(bad),
            best=best,
        )

    results = []
    for N in args.n:
        for ess in args.ess:
            warm_s = once(10_000, N, ess, args.T)["time"]
            runs = [once(seed, N, ess, args.T) for seed in range(args.repeats)]
            results.append(
                dict(
                    N=N,
                    T=args.T,
                    ess_threshold=ess,
                    warmup_s=warm_s,
                    times=[r["time"] for r in runs],
                    log_Z=[r["log_Z"] for r in runs],
                    runs=runs,
                )
            )
            print(json.dumps(jsonable(results[-1])), file=sys.stderr, flush=True)
    versions = {p: version(p) for p in ("llamppl", "genlm-backend", "torch", "transformers")}
    return dict(
        prompt_ids=list(map(int, prompt_ids)),
        vocab=len(lm.str_vocab),
        masks={str(i): dict(allowed=len(m), sha256_16=mask_digest(m)) for i, m in masks.items()},
        masks_s=masks_s,
        versions=versions,
        results=results,
    )


def call_llamppl(python: str, args, N: int) -> dict:
    cmd = [python, __file__, "--llamppl-side", "--model", args.model, "--n", str(N)]
    cmd += ["--T", str(args.T), "--ess", ",".join(map(str, args.ess))]
    cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    cmd += ["--dump-masks", args.dump_masks] if args.dump_masks else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return unjson(json.loads(proc.stdout.strip().splitlines()[-1]))


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
    p.add_argument("--quick", action="store_true", help="N = 16, T = 8, 2 runs")
    p.add_argument("--model", default=None, help="local HF folder (default: the embedded model)")
    p.add_argument("--llamppl-python", default=os.environ.get("LLAMPPL_PYTHON"))
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--ess", type=lambda s: [float(x) for x in s.split(",")], default=[0.5, 0.0])
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dump-masks", default=None, help="write LLaMPPL's six allowed sets (JSON)")
    p.add_argument("--out", default=None, help="markdown file (default: results/...)")
    p.add_argument("--llamppl-side", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.T, args.repeats = args.n or [16], 8, args.repeats or 2
    args.n = args.n or [16, 64]
    args.repeats = args.repeats or 5
    args.model = str(args.model or EMBEDDED)
    if args.llamppl_side:
        print(json.dumps(jsonable(llamppl_side(args)), allow_nan=False))
        return

    flags = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={args.threads}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    # XLA's CPU runtime runs independent ops concurrently even with one intra-op thread: pin
    # to ``threads`` cores (the peer's subprocess inherits the same cores)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-args.threads :])
    python = args.llamppl_python or DEFAULT_LLAMPPL_PYTHON
    have_llamppl = Path(python).exists() and (
        subprocess.run([python, "-c", "import llamppl"], capture_output=True).returncode == 0
    )
    if not have_llamppl:
        print(
            f"LLaMPPL not found at {python}; set it up with:\n  {SETUP}\n"
            "(or pass --llamppl-python / set LLAMPPL_PYTHON). Reporting our side only."
        )

    rows, info, load = [], None, os.getloadavg()[0]
    for N in args.n:
        mine = {ess: ours_or_none(args.model, N, args.T, ess, args.repeats) for ess in args.ess}
        peer = {}
        if have_llamppl:
            info = call_llamppl(python, args, N)
            peer = {r["ess_threshold"]: r for r in info["results"]}
        for ess in args.ess:
            o, g = mine.get(ess), peer.get(ess)
            rows.append((N, ess, o, g))
            t_o = o and statistics.median(o["times"])
            t_g = g and statistics.median(g["times"])
            print(N, ess, "ours:", t_o, "LLaMPPL:", t_g, g and g["log_Z"], flush=True)

    tag = Path(args.model).name
    out = Path(args.out) if args.out else RESULTS / f"bench_llamppl_words_{tag}.md"
    T = args.T
    lines = [
        f"# bench_llamppl_words ({datetime.date.today()}, {platform.machine()}, CPU, "
        f"{os.cpu_count()} cores shared with other jobs (load average {load:.1f} at the start), "
        f"{args.threads} thread(s) per side)",
        "",
        f"Model: `{args.model}`"
        + (f" (V = {info['vocab']})" if info else "")
        + f". Prompt {PROMPT!r}, LLaMPPL's every-word-at-most-{MAX_LETTERS}-letters example, "
        f"T = {T} tokens (EOS never allowed), systematic resampling at ESS < threshold N, "
        "float32.",
        "LLaMPPL: "
        + (", ".join(f"{k} {v}" for k, v in info["versions"].items()) if info else "not run")
        + f". Median wall time of {args.repeats} runs after a warm-up run; ms/pt = "
        "milliseconds per particle-token, median / (N T); log Z: mean ± s.e. (median) over "
        "those runs.",
        "",
        "| N | ESS threshold | ours s | LLaMPPL s | LLaMPPL ms/pt | ratio LLaMPPL/ours "
        "| log Z ours | log Z LLaMPPL | z |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for N, ess, o, g in rows:
        t_o = statistics.median(o["times"]) if o else None
        t_g = statistics.median(g["times"]) if g else None
        lines.append(
            f"| {N} | {ess:g} | {'-' if t_o is None else f'{t_o:.3f}'} | "
            f"{'-' if t_g is None else f'{t_g:.2f}'} | "
            f"{'-' if t_g is None else f'{1e3 * t_g / (N * T):.2f}'} | "
            f"{'-' if None in (t_o, t_g) else f'{t_g / t_o:.0f}'} | "
            f"{fmt(o and o['log_Z'])} | {fmt(g and g['log_Z'])} | "
            f"{z_cell(o and o['log_Z'], g and g['log_Z'])} |"
        )
    if info:
        m = info["masks"]
        lines += [
            "",
            "Allowed tokens per state i (length of the last word, capped at 5): "
            + ", ".join(f"i={i}: {m[str(i)]['allowed']}" for i in range(MAX_LETTERS + 1))
            + " (sha256 of the sorted ids, 16 hex: "
            + ", ".join(m[str(i)]["sha256_16"] for i in range(MAX_LETTERS + 1))
            + ").",
        ]
    if any(o for _, _, o, _ in rows):
        lines += [
            "",
            "Ours: `Target(lm, prompt, T, lm_inference.potentials.short_words(lm, 5))` as "
            "`ours()` wires it. The z column compares the two targets' log Z, which agree only "
            "if ours implements the example's token rule (the script's docstring: no newline, no EOS, a letter or "
            "punctuation in every token, at most 5 characters per stripped token, the whitespace "
            "split); a plain 'every word has at most 5 letters' is a larger set, so a larger Z.",
        ]
    else:
        lines += [
            "",
            "Ours: not run (no on-device short-words potential yet; see `ours()` in the script).",
        ]
    if not have_llamppl:
        lines += ["", f"LLaMPPL not run: no interpreter at {python}. Setup: `{SETUP}`."]
    text = "\n".join(lines) + "\n"
    print(text)
    out.write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps(jsonable(dict(args=vars(args), info=info, rows=rows)), default=str, indent=1)
    )


if __name__ == "__main__":
    main()
