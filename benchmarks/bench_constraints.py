"""Cost of on-device constraints in twisted SMC, and of a new prompt.

On the embedded model (or ``--model PATH``), N particles, T tokens, prompt "ROMEO.\\n":

- time per token of ``smc`` with the regex mask ``[A-Z][a-z]+( [a-z]+){2,5}[.!?]``, the JSON
  schema of ``examples/data/person.schema.json``, LLaMPPL's short-words mask and prompt
  intersection, against the same sweep without a potential (goal for the regex: <= 1.10);
- the automata's sizes and device memory, and their compile (outlines-core + export) time;
- the first call's time (compilation) and a call with a *new prompt of the same length*
  (no recompilation: the prompt is an argument of the compiled sweep).

Times: median of ``--repeats`` runs after the compiling call, one process, interleaved.

    python benchmarks/bench_constraints.py [--quick] [--model PATH]
"""

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import lm_inference
from lm_inference import potentials

OUT = Path(__file__).parent / "results" / "bench_constraints.md"
PATTERN = r"[A-Z][a-z]+( [a-z]+){2,5}[.!?]"
SCHEMA = Path(__file__).parents[1] / "examples" / "data" / "person.schema.json"


def timed(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    N, T = (16, 16) if args.quick else (64, 32)
    repeats = args.repeats or (2 if args.quick else 5)
    lm = lm_inference.load(args.model) if args.model else lm_inference.load()
    build = {}
    t0 = time.perf_counter()
    pots = {"none": None}
    pots["regex"] = potentials.regex(lm, PATTERN)
    build["regex"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pots["json_schema"] = potentials.json_schema(lm, SCHEMA)
    build["json_schema"] = time.perf_counter() - t0
    pots["short_words"] = potentials.short_words(lm, 5)
    pots["prompt intersection"] = potentials.prompted(lm, "JULIET.\n")
    targets = {k: lm_inference.Target(lm, "ROMEO.\n", T, p) for k, p in pots.items()}
    compile_s, new_prompt_s = {}, {}
    for k, tg in targets.items():
        compile_s[k] = timed(lambda tg=tg: lm_inference.smc(jax.random.key(0), tg, N).log_Z)
        ids = np.asarray(tg.prompt_ids).copy()
        ids[0] = (ids[0] + 1) % lm.vocab_size  # another prompt of the same length
        other = lm_inference.Target(lm, ids, T, pots[k])
        new_prompt_s[k] = timed(lambda o=other: lm_inference.smc(jax.random.key(1), o, N).log_Z)
    times = {k: [] for k in targets}
    for r in range(repeats):
        for k, tg in targets.items():
            times[k].append(timed(lambda tg=tg, r=r: lm_inference.smc(jax.random.key(r), tg, N).log_Z))
    med = {k: float(np.median(v)) for k, v in times.items()}
    lines = [
        f"# On-device constraints: cost per token ({datetime.date.today()})",
        "",
        f"Model: {args.model or 'embedded default'}; N = {N}, T = {T}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.default_backend()}; median of "
        f"{repeats} runs after compilation.",
        "",
        "| potential | ms / token | ratio to none | first call (compile) s | new prompt, same length s |",
        "|---|---|---|---|---|",
    ]
    for k in targets:
        lines.append(
            f"| {k} | {1e3 * med[k] / T:.2f} | {med[k] / med['none']:.3f} | {compile_s[k]:.2f} | "
            f"{new_prompt_s.get(k, float('nan')):.3f} |"
        )
    lines += ["", "| automaton | states | token classes | device memory KiB | build s |",
              "|---|---|---|---|---|"]
    for k in ("regex", "json_schema"):
        i = pots[k].info
        lines.append(f"| {k} | {i['num_states']} | {i['num_classes']} | {i['nbytes'] / 1024:.1f} | "
                     f"{build[k]:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        OUT.write_text(text)
    return {"median_s": med, "compile_s": compile_s, "new_prompt_s": new_prompt_s}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
