"""Every twist-learning method at equal training steps (Zhao et al. 2024, sec. 7, on our
implementation): SMC lower and conditional-SMC upper bounds on log Z at N = 32 and 512, the
KL(sigma || q) interval and the final-step ESS, over seeds.

Model: the embedded default model (``lm_inference.load()``), prompt ``"ROMEO.\\n"``. Targets:

- ``king``: the rare event ``phi = 1[" king" in s]``, T = 10 (log Z about -4.8);
- ``royal``: a tempered score, ``log phi = log sigmoid((k(s) - 1) / 0.5)`` with ``k`` the number
  of " king" / " lord" / " queen" / " prince" tokens (smooth, ``phi <= 1``), T = 10;
- ``infill``: infilling, ``phi(s) = p0(" my lord" | prompt, s)`` for T = 6 middle tokens, EOS off
  (:func:`lm_inference.potentials.infilling`; ``phi <= 1``).

Exact target samples (references of the upper bounds) come from rejection sampling. Every method
trains the same default MLP head for ``--steps`` steps of 64 (CTL, SIXO, DPG without exact
samples: the positives are self-normalized proposal draws). ``--quick``: 1 seed, 40 steps,
4 runs per bound.

Usage: python benchmarks/bench_twist_methods.py [--quick] [--targets king,royal,infill]
       [--steps S] [--seeds K] [--runs R] [--methods ctl,sixo] [--out FILE]
       python benchmarks/bench_twist_methods.py --render  # the figure from the table
"""

import argparse
import datetime
import gc
import platform
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import lm_inference
from lm_inference import potentials
from lm_inference.bounds import bidirectional_bounds, rejection_samples
from lm_inference.target import Target
from lm_inference.twist_training import METHODS, train_twist
from lm_inference.twisted_smc import smc_runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_twist_methods.md"


def targets(lm, names):
    ids = {w: lm.tokenizer(" " + w)["input_ids"][0] for w in ("king", "lord", "queen", "prince")}
    out = {}
    if "king" in names:
        out["king"] = Target(lm, "ROMEO.\n", 10, potentials.contains_token(ids["king"]))
    if "royal" in names:
        royal = jnp.asarray(list(ids.values()))

        def count(s):
            return jnp.sum(jnp.isin(s, royal)).astype(jnp.float32)

        out["royal"] = Target(lm, "ROMEO.\n", 10, potentials.threshold(count, 1.0, soft=0.5))
    if "infill" in names:
        prompt = jnp.asarray(lm.tokenizer("ROMEO.\n")["input_ids"], jnp.int32)
        cont = jnp.asarray(lm.tokenizer(" my lord")["input_ids"], jnp.int32)
        pot = potentials.infilling(lm, prompt, cont)
        out["infill"] = Target(lm, prompt, 6, pot, eos_token_id=-1)
    return out


def measure(key, target, exact, twist, runs, ns):
    row = {}
    for n in ns:
        b = bidirectional_bounds(key, target, exact, n, twist=twist, num_runs=runs)
        r = smc_runs(jax.random.split(jax.random.fold_in(key, n), runs), target, n, twist=twist)
        ess = np.nan_to_num(np.asarray(r.ess)[:, -1] / n).mean()
        row[n] = (b.lower.mean, b.upper.mean, b.kl_sigma_q, ess)
    return row


def fmt(x):
    return "-inf" if x == -np.inf else f"{x:.2f}"


def table_rows(table: dict, warned: dict, ns) -> list[str]:
    """One markdown row per method: bounds over seeds, KL interval, ESS, warnings."""
    lines = []
    for m, rows in table.items():
        cells = []
        for n in ns:
            lo = [r[n][0] for r in rows]
            up = [r[n][1] for r in rows]
            kl = np.mean([r[n][2] for r in rows], axis=0)
            ess = np.mean([r[n][3] for r in rows])
            cells += [over_seeds(lo), over_seeds(up), f"[{fmt(kl[0])}, {fmt(kl[1])}]"]
            cells.append(f"{ess:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {warned[m]}/{len(rows)} |")
    return lines


def over_seeds(values) -> str:
    """Mean over seeds, with the 95 % t-interval half-width when there are several finite ones."""
    x = np.asarray(values, np.float64)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return fmt(x.mean())
    h = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return f"{x.mean():.2f} ± {h:.2f}"


def _num(cell: str) -> float:
    return float(cell.split("±")[0])


def parse_tables(text: str) -> dict:
    """``{target: {method: {N: (lower, upper, (kl_lo, kl_hi), ess)}}}`` from the markdown."""
    out, name, ns = {}, None, []
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            out[name] = {}
        elif name and line.startswith("| method"):
            ns = [
                int(c.split("N=")[1])
                for c in line.split("|")[2:-2]
                if c.strip().startswith("lower")
            ]
        elif name and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            row = {}
            for i, n in enumerate(ns):
                lo, up, kl, ess = cells[1 + 4 * i : 5 + 4 * i]
                kl_lo, kl_hi = (float(v) for v in kl.strip("[]").split(","))
                row[n] = (_num(lo), _num(up), (kl_lo, kl_hi), float(ess))
            out[name][cells[0]] = row
    return out


def plot(tables: dict, paths) -> bool:
    """KL(sigma || q) intervals per method and target (N = 32 and 512); False without
    matplotlib. An interval open above (a -inf lower bound) is drawn to the top with an arrow."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], tables.items(), strict=True):
        methods = list(rows)
        ns = sorted(next(iter(rows.values())))
        finite = [v for r in rows.values() for n in ns for v in r[n][2] if np.isfinite(v)]
        top = 1.15 * max(finite)
        for j, n in enumerate(ns):
            for i, m in enumerate(methods):
                lo, hi = rows[m][n][2]
                x = i + (j - 0.5 * (len(ns) - 1)) * 0.3
                lo, hi = min(lo, hi), max(lo, hi)  # Monte Carlo error can swap them
                open_top = not np.isfinite(hi)
                hi = top if open_top else hi
                ax.plot(
                    [x, x],
                    [lo, hi],
                    color=f"C{j}",
                    lw=4,
                    solid_capstyle="butt",
                    marker="_",
                    ms=9,
                    mew=2,
                    label=f"N = {n}" if i == 0 else None,
                )
                if open_top:
                    ax.annotate(
                        "",
                        (x, top * 1.04),
                        (x, top * 0.9),
                        arrowprops=dict(arrowstyle="->", color=f"C{j}"),
                    )
        ax.set_xticks(range(len(methods)), methods)
        ax.set_ylim(0, top * 1.08)
        ax.set_title(name)
        ax.set_ylabel("KL(sigma || q) interval (nats)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=120)
    return True


FIGURES = (RESULTS.with_suffix(".png"), ROOT / "docs" / "img" / "twist_methods.png")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", default="king,royal,infill")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--methods", default=",".join(METHODS), help="twist methods besides none")
    ap.add_argument("--out", default=None, help="results file (default: results/ and a figure)")
    ap.add_argument("--render", action="store_true", help="redraw the figure from the table")
    a = ap.parse_args()
    if a.render:
        plot(parse_tables(RESULTS.read_text()), FIGURES)
        return
    out = Path(a.out) if a.out else RESULTS
    steps = a.steps or (40 if a.quick else 200)
    seeds = a.seeds or (1 if a.quick else 3)
    runs = a.runs or (4 if a.quick else 16)
    ns = (32, 512)
    lm = lm_inference.load()
    t0 = time.perf_counter()
    lines = [
        "# Twist-learning methods at equal training steps",
        "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{'--quick, ' if a.quick else ''}{steps} steps of 64, {seeds} seed(s), {runs} runs per "
        "bound; lower = E[SMC log Z_hat], upper = E[CSMC log Z_hat] (exact references), "
        "KL(sigma||q) interval from the mean bounds, ESS = final-step ESS / N. Mean over seeds "
        "(± the 95 % t-interval over seeds where all are finite).",
        "",
    ]
    for name, target in targets(lm, a.targets.split(",")).items():
        exact = rejection_samples(jax.random.key(3), target, runs, batch=4096)
        hdr = "| method | " + " | ".join(
            f"lower N={n} | upper N={n} | KL(s\\|\\|q) N={n} | ESS N={n}" for n in ns
        )
        lines += [f"## {name}", "", hdr + " | warned |", "|" + "---|" * (1 + 4 * len(ns) + 1)]
        table = {"none": [measure(jax.random.key(4), target, exact, None, runs, ns)]}
        warned = {"none": 0}
        for m in a.methods.split(","):
            table[m], warned[m] = [], 0
            for seed in range(seeds):
                with warnings.catch_warnings(record=True) as rec:
                    warnings.simplefilter("always")
                    tw = train_twist(
                        jax.random.key(10 + seed), target, m, num_steps=steps, progress=False
                    ).twist
                warned[m] += any("worse than no twist" in str(w.message) for w in rec)
                table[m].append(measure(jax.random.key(4), target, exact, tw, runs, ns))
                # every twist compiles new executables; dropping them keeps the process under
                # the kernel's limit of memory mappings (vm.max_map_count, 65530 here), which a
                # full run otherwise reaches after about 20 minutes ("LLVM compilation error:
                # Cannot allocate memory" with gigabytes free)
                del tw
                jax.clear_caches()
                gc.collect()
            print(name, m, f"{time.perf_counter() - t0:.0f} s", flush=True)
            # written after every method, so an interrupted run keeps what it finished
            out.write_text("\n".join(lines + table_rows(table, warned, ns)) + "\n")
        lines += [*table_rows(table, warned, ns), ""]
    lines.append(f"Total {time.perf_counter() - t0:.0f} s.")
    out.write_text("\n".join(lines) + "\n")
    if a.out is None and plot(parse_tables("\n".join(lines)), FIGURES):
        lines += ["", "![KL(sigma||q) intervals](bench_twist_methods.png)"]
        out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
