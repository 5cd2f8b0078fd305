"""Twisted SMC (``lm_inference.twisted_smc.smc``) vs LLaMPPL's ``smc_standard``, same model, on CPU.

Both sides run the same algorithm on the same local Hugging Face checkpoint (float32): N particles
sample T new tokens after the prompt ``"ROMEO.\\n"`` with the LM itself as proposal (no twist),
a particle that emits EOS stops, the potential ``phi(s) = 1[token in s]`` (default " the";
``--no-potential``: ``phi = 1``) weights each particle at the end, systematic resampling when
``ESS < N / 2``, and ``log Z_hat = logsumexp(log w) - log N``. (With no twist the weights only
change at the last step, so resampling is checked every step but never fires before it.)
LLaMPPL uses its CPU backend (genlm-backend ``AsyncTransformer``, transformers + torch) with the
prompt's KV cache (``lm.cache_kv``), batches of N queries, and its output cache cleared before each
run; our side runs one jitted ``lax.scan`` over tokens.

Reported per (N, T): the median wall time of a few runs after a warm-up run (seeds 0, 1, ...),
the ratio LLaMPPL / ours, our compile time (the first call), and the mean +- standard error of
``log Z_hat`` over those runs on each side (the same estimator at the same N, so the means agree
within Monte Carlo error; without a potential ``log Z_hat = 0`` exactly). Configurations are
interleaved (ours, then LLaMPPL, per (N, T)) so both sides see the same machine load. Both sides
use ``--threads`` intra-op threads (default 1: this machine is shared, and torch with 2 threads
under load was ten times slower than with 1).

LLaMPPL runs in its own virtual environment as a subprocess (this script with ``--llamppl-side``);
it is never needed by the tests. Set it up once (installs from the package registry; the torch
version is a CPU build):

    python -m venv /tmp/llamppl-venv
    /tmp/llamppl-venv/bin/pip install llamppl==0.2.3 torch==2.13.0 transformers==5.24.0

Usage: python benchmarks/bench_llamppl.py [--quick] [--model PATH] [--llamppl-python PY]
(``--llamppl-python`` defaults to ``$LLAMPPL_PYTHON``, else ``/tmp/llamppl-venv/bin/python``.)
Without LLaMPPL the script prints these setup steps and reports our timings only.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

PROMPT = "ROMEO.\n"
OUT = Path(__file__).parent / "results" / "bench_llamppl.md"
DEFAULT_LLAMPPL_PYTHON = "/tmp/llamppl-venv/bin/python"
SETUP = (
    "python -m venv /tmp/llamppl-venv && /tmp/llamppl-venv/bin/pip install "
    "llamppl==0.2.3 torch==2.13.0 transformers==5.24.0"
)

NOTE = (
    "LLaMPPL side: `CachedCausalLM.from_pretrained(model, backend='hf', batch_size=N, "
    "timeout=0.001)` (one batched forward per step), `lm.cache_kv(prompt)` and `lm.clear_cache()` "
    "before each run. genlm-backend caches the KV of the prompt only, so the forward at step t "
    "re-runs the t tokens generated so far (cost ~ N T^2, logits at every position), and "
    "particles are deep-copied Python objects on resampling; ours keeps a per-particle KV cache "
    "in one compiled `lax.scan` (cost ~ N T)."
)


def log_mean_exp(log_w: list[float]) -> float:
    m = max(log_w)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in log_w) / len(log_w))


def mean_se(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2 or not all(math.isfinite(x) for x in xs):
        return statistics.mean(xs), math.nan
    return statistics.mean(xs), statistics.stdev(xs) / math.sqrt(len(xs))


def fmt(xs: list[float]) -> str:
    m, se = mean_se(xs)
    return f"{m:.3f} ± {se:.3f}" if math.isfinite(se) else f"{m:.3f}"


def z_cell(a: list[float], b: list[float]) -> str:
    """Difference of the means in standard errors."""
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    if ma == mb:
        return "0"
    return f"{(ma - mb) / math.hypot(sa, sb):.1f}" if sa + sb > 0 else "-"


# ------------------------------------------------------------------ ours (project .venv)
class Ours:
    def __init__(self, model: str | None, threads: int):
        flags = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
        # XLA's CPU runtime runs independent ops concurrently even with one intra-op thread: pin
        # to ``threads`` cores (the peer's subprocess inherits the same cores)
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-threads:])
        import jax
        import jax.numpy as jnp

        import lm_inference

        self.jax = jax
        self.lm = lm_inference.load(model, dtype=jnp.float32)

    def run(self, N: int, T: int, token_id: int | None, repeats: int) -> dict:
        from lm_inference import potentials
        from lm_inference.target import Target
        from lm_inference.twisted_smc import smc

        jax = self.jax
        pot = None if token_id is None else potentials.contains_token(token_id)
        target = Target(self.lm, PROMPT, T, pot)

        def once(seed):
            t0 = time.perf_counter()
            r = jax.block_until_ready(smc(jax.random.key(seed), target, N, ess_threshold=0.5))
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

    class FixedLength(Model):
        """T tokens from the LM (stop at EOS), then ``condition(token in s)``."""

        def __init__(self, lm, prompt, T, token_id, eos):
            super().__init__()
            self.context = LMContext(lm, prompt)
            self.T, self.token_id, self.eos = T, token_id, eos

        async def step(self):
            tok = await self.sample(self.context.next_token())
            new = self.context.tokens[self.context.prompt_token_count :]
            if tok.token_id == self.eos or len(new) == self.T:
                if self.token_id is not None:
                    self.condition(self.token_id in new)
                self.finish()

        def immutable_properties(self):
            return {"T", "token_id", "eos"}

    opts = {"dtype": torch.float32, "device_map": None}
    results = []
    for N, T in args.configs:
        lm = CachedCausalLM.from_pretrained(
            args.model, backend="hf", batch_size=N, timeout=0.001, hf_opts=opts
        )
        eos = lm.tokenizer.eos_token_id
        prompt_ids = lm.tokenizer.encode(PROMPT)

        def once(seed, lm=lm, N=N, T=T, eos=eos, prompt_ids=prompt_ids):
            np.random.seed(seed)
            t0 = time.perf_counter()
            lm.clear_cache()  # no output reuse across runs
            lm.cache_kv(prompt_ids)
            model = FixedLength(lm, PROMPT, T, args.token_id, eos)
            particles = asyncio.run(smc_standard(model, N, 0.5, resampling_method="systematic"))
            elapsed = time.perf_counter() - t0
            return elapsed, log_mean_exp([float(p.weight) for p in particles])

        warm_s, _ = once(args.repeats)
        times, log_z = zip(*(once(seed) for seed in range(args.repeats)), strict=True)
        results.append(dict(N=N, T=T, warmup_s=warm_s, times=list(times), log_Z=list(log_z)))
    versions = {p: version(p) for p in ("llamppl", "genlm-backend", "torch", "transformers")}
    return dict(prompt_ids=list(map(int, prompt_ids)), versions=versions, results=results)


def call_llamppl(python: str, args, N: int, T: int) -> dict:
    cmd = [python, __file__, "--llamppl-side", "--model", str(args.model)]
    cmd += ["--configs", f"{N}:{T}", "--repeats", str(args.repeats), "--threads", str(args.threads)]
    cmd += [] if args.token_id is None else ["--token-id", str(args.token_id)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="T = 16 only, 3 repeats")
    p.add_argument("--model", default=None, help="local HF folder (default: the embedded model)")
    p.add_argument("--llamppl-python", default=os.environ.get("LLAMPPL_PYTHON"))
    p.add_argument("--token", default=" the", help="phi = 1[this single token in s]")
    p.add_argument("--no-potential", action="store_true", help="phi = 1 (log Z = 0)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--llamppl-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--configs", type=lambda s: [tuple(map(int, c.split(":"))) for c in s.split(",")]
    )
    p.add_argument("--token-id", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.llamppl_side:
        print(json.dumps(llamppl_side(args)))
        return
    args.repeats = args.repeats or (3 if args.quick else 10)
    configs = args.configs or [
        (n, t) for t in ((16,) if args.quick else (16, 32)) for n in (16, 64)
    ]

    ours = Ours(args.model, args.threads)  # None: the embedded default model
    args.model = ours.lm.path
    tok = ours.lm.tokenizer
    prompt_ids = tok(PROMPT)["input_ids"]
    args.token_id = None
    if not args.no_potential:
        ids = tok.encode(args.token, add_special_tokens=False)
        if len(ids) != 1:
            raise SystemExit(f"--token {args.token!r} is {len(ids)} tokens {ids}; give one token.")
        args.token_id = ids[0]

    python = args.llamppl_python or DEFAULT_LLAMPPL_PYTHON
    have_llamppl = Path(python).exists() and (
        subprocess.run([python, "-c", "import llamppl"], capture_output=True).returncode == 0
    )
    if not have_llamppl:
        print(
            f"LLaMPPL not found at {python}; set it up with:\n  {SETUP}\n"
            "(or pass --llamppl-python / set LLAMPPL_PYTHON). Reporting our timings only."
        )

    rows, info, load = [], None, os.getloadavg()[0]
    for N, T in configs:
        o = ours.run(N, T, args.token_id, args.repeats)
        row = [N, T, statistics.median(o["times"]), None, o["compile_s"], o["log_Z"], None]
        if have_llamppl:
            info = call_llamppl(python, args, N, T)
            if info["prompt_ids"] != list(prompt_ids):
                raise RuntimeError(f"prompt ids differ: {info['prompt_ids']} vs {prompt_ids}")
            r = info["results"][0]
            row[3], row[6] = statistics.median(r["times"]), r["log_Z"]
        rows.append(row)
        print(row, flush=True)

    import jax

    pot = (
        "none (phi = 1)"
        if args.token_id is None
        else f"1[{args.token!r} (id {args.token_id}) in s]"
    )
    lines = [
        f"# bench_llamppl ({datetime.date.today()}, {platform.machine()}, CPU, "
        f"{os.cpu_count()} cores shared with other jobs (load average {load:.1f} at the start), "
        f"{args.threads} thread(s) per side)",
        "",
        f"Model: `{args.model}` ({ours.lm!r}). Prompt {PROMPT!r} ({len(prompt_ids)} tokens), "
        f"potential {pot}, no twist, systematic resampling at ESS < N/2, float32.",
        f"Ours: jax {jax.__version__}. LLaMPPL: "
        + (", ".join(f"{k} {v}" for k, v in info["versions"].items()) if info else "not run")
        + f". Median of {args.repeats} runs after a warm-up run; log Z: mean ± s.e. over those runs.",
        "",
        "| N | T | ours s | LLaMPPL s | ratio LLaMPPL/ours | our compile s | log Z ours "
        "| log Z LLaMPPL | z (difference / s.e.) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for N, T, t_o, t_l, c, z_o, z_l in rows:
        lines.append(
            f"| {N} | {T} | {t_o:.3f} | {'-' if t_l is None else f'{t_l:.3f}'} | "
            f"{'-' if t_l is None else f'{t_l / t_o:.1f}'} | {c:.1f} | {fmt(z_o)} | "
            f"{'-' if z_l is None else fmt(z_l)} | {'-' if z_l is None else z_cell(z_o, z_l)} |"
        )
    if have_llamppl:
        lines += ["", NOTE]
    else:
        lines += [
            "",
            f"LLaMPPL not run: no interpreter with llamppl at {python}. Setup: `{SETUP}`.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
