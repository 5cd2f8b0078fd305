"""Discrete deterministic Gibbs vs random-scan and systematic-scan Gibbs on Ising models.

Targets: free-boundary 4x4 Ising models (16 spins, 65536 states, exact moments by enumeration),
field h = 0.1, couplings beta = 0.3 (weak) and 0.45 (strong). Error: RMSE over independent
chains of the estimates of E[m] and E[m^2] (m: mean spin) against enumeration, as a function of

* density evaluations: deterministic Gibbs spends sum_i (K_i - 1) = 16 log-joint evaluations per
  event (the conditional of every coordinate at the new state; log p(x) is kept), Gibbs 1 per
  single-site update (the flipped state; log p(x) is kept);
* samples: events (deterministic Gibbs) or single-site updates (Gibbs);
* wall time after compilation (both vectorized over chains with the same generic log joint; the
  time of the whole budget, prorated along it).

Every chain starts from a uniformly random configuration (no burn-in, same for all samplers);
deterministic Gibbs draws its cell positions and speeds c_i ~ U(0.5, 1.5) per chain; estimates
are time-weighted for deterministic Gibbs and plain averages for Gibbs.

    python benchmarks/bench_deterministic_gibbs.py [--quick]
"""

import argparse
import datetime
import itertools
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import kernels.flows as fl  # noqa: E402

SHAPE, FIELD = (4, 4), 0.1
D = SHAPE[0] * SHAPE[1]
BETAS = (0.3, 0.45)
CHECKPOINTS = 100


def exact_moments(lj):
    xs = jnp.asarray(np.array(list(itertools.product([0, 1], repeat=D)), np.int32))
    logp = np.asarray(jax.jit(jax.vmap(lj))(xs), np.float64)
    p = np.exp(logp - logp.max())
    p /= p.sum()
    m = np.asarray((2 * xs - 1).mean(1), np.float64)
    return np.array([p @ m, p @ m**2])


def run_det_gibbs(lj, chains, events, key):
    """Running time-weighted estimates of (E m, E m^2) at CHECKPOINTS equally spaced events."""
    init, step = fl.discrete_deterministic_gibbs(lj, [2] * D)
    seg = events // CHECKPOINTS

    def one(key):
        k0, k1 = jax.random.split(key)
        state = init(k1, jax.random.bernoulli(k0, 0.5, (D,)).astype(jnp.int32))

        def segment(carry, _):
            def body(_, c):
                state, sums = c
                state, info = step(state)
                m = (2 * info.position - 1).mean()
                return state, sums + info.weight * jnp.stack([1.0, m, m * m])

            carry = jax.lax.fori_loop(0, seg, body, carry)
            return carry, carry[1][1:] / carry[1][0]

        return jax.lax.scan(segment, (state, jnp.zeros(3)), None, length=CHECKPOINTS)[1]

    return jax.jit(jax.vmap(one))(jax.random.split(key, chains))


def run_gibbs(lj, chains, updates, key, systematic):
    """Heat-bath Gibbs with log p(x) kept: one evaluation (the flipped state) per update."""
    seg = updates // CHECKPOINTS

    def one(key):
        k0, k1 = jax.random.split(key)
        x = jax.random.bernoulli(k0, 0.5, (D,)).astype(jnp.int32)

        def segment(carry, key):
            def body(t, c):
                x, lp, sums, n = c
                ki, ku = jax.random.split(jax.random.fold_in(key, t))
                i = jnp.mod(n, D) if systematic else jax.random.randint(ki, (), 0, D)
                y = x.at[i].set(1 - x[i])
                lq = lj(y)
                flip = jax.random.uniform(ku) < jax.nn.sigmoid(lq - lp)
                x, lp = jnp.where(flip, y, x), jnp.where(flip, lq, lp)
                m = (2 * x - 1).mean()
                return x, lp, sums + jnp.stack([m, m * m]), n + 1

            carry = jax.lax.fori_loop(0, seg, body, carry)
            return carry, carry[2] / carry[3]

        carry = (x, lj(x), jnp.zeros(2), jnp.zeros((), jnp.int32))
        return jax.lax.scan(segment, carry, jax.random.split(k1, CHECKPOINTS))[1]

    return jax.jit(jax.vmap(one))(jax.random.split(key, chains))


def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile + first run
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return np.asarray(out), best


def bench(beta, chains, budget):
    lj = fl.ising_log_joint(SHAPE, beta, FIELD)
    exact = exact_moments(lj)
    out = {}
    est, t = timed(run_det_gibbs, lj, chains, budget // D, jax.random.key(0))
    out["deterministic Gibbs"] = (est, t, D)  # evaluations per sample
    est, t = timed(
        lambda *a: run_gibbs(*a, systematic=False), lj, chains, budget, jax.random.key(1)
    )
    out["random-scan Gibbs"] = (est, t, 1)
    est, t = timed(lambda *a: run_gibbs(*a, systematic=True), lj, chains, budget, jax.random.key(2))
    out["systematic-scan Gibbs"] = (est, t, 1)
    curves = {}
    for name, (est, t, per_sample) in out.items():
        rmse = np.sqrt(np.mean((est - exact) ** 2, axis=0))  # (CHECKPOINTS, 2)
        frac = np.arange(1, CHECKPOINTS + 1) / CHECKPOINTS
        evals = frac * budget
        curves[name] = {
            "evals": evals,
            "samples": evals / per_sample,
            "seconds": frac * t,
            "rmse": rmse,
            "total_s": t,
        }
    return exact, curves


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_x = (("evals", "log-joint evaluations"), ("samples", "samples (events / updates)"))
    axes_x += (("seconds", "wall time (s)"),)
    fig, axes = plt.subplots(2 * len(results), 3, figsize=(14, 4.2 * len(results)), squeeze=False)
    for b, (beta, (exact, curves)) in enumerate(results.items()):
        for r, label in enumerate(("E[m]", "E[m^2]")):
            for c, (key, xlabel) in enumerate(axes_x):
                ax = axes[2 * b + r, c]
                for name, cur in curves.items():
                    ax.loglog(cur[key], cur["rmse"][:, r], label=name)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"RMSE of {label}")
                ax.set_title(f"beta={beta}: {label} (exact {exact[r]:.4f})", fontsize=10)
                ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer chains and a smaller budget")
    args = ap.parse_args(argv)
    chains = 64 if args.quick else 256
    budget = 64_000 if args.quick else 800_000  # log-joint evaluations per chain
    results = {beta: bench(beta, chains, budget) for beta in BETAS}
    stem = "bench_deterministic_gibbs_quick" if args.quick else "bench_deterministic_gibbs"
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(results, out_dir / f"{stem}.png")

    lines = [
        "# Discrete deterministic Gibbs vs Gibbs on 4x4 Ising models",
        "",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Machine: "
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"JAX {jax.__version__} on {jax.default_backend()}.",
        f"{chains} chains, {budget} log-joint evaluations per chain, h = {FIELD}; RMSE over "
        "chains of the running estimates against enumeration (65536 states). Deterministic "
        f"Gibbs: {D} evaluations per event; Gibbs: 1 per update. Figure: `{stem}.png`.",
        "",
    ]
    for beta, (exact, curves) in results.items():
        names = list(curves)
        det = curves["deterministic Gibbs"]
        lines += [
            f"## beta = {beta} (exact E[m] = {exact[0]:.5f}, E[m^2] = {exact[1]:.5f})",
            "",
            "Wall time of the whole budget: "
            + ", ".join(f"{n} {curves[n]['total_s']:.2f} s" for n in names)
            + ".",
            "",
            "RMSE at equal log-joint evaluations (ratio: deterministic / random-scan):",
            "",
            "| evaluations | "
            + " | ".join(f"{n} E[m] | {n} E[m^2]" for n in names)
            + " | ratio E[m] | ratio E[m^2] |",
            "| ---: | " + " | ".join("---: | ---:" for _ in names) + " | ---: | ---: |",
        ]
        for idx in (0, 2, 9, 29, 99):
            cells = [f"{curves[n]['rmse'][idx, r]:.5f}" for n in names for r in (0, 1)]
            ratio = det["rmse"][idx] / curves["random-scan Gibbs"]["rmse"][idx]
            lines.append(
                f"| {int(det['evals'][idx])} | " + " | ".join(cells) + f" | {ratio[0]:.2f} "
                f"| {ratio[1]:.2f} |"
            )
        # equal samples and equal time: interpolate both curves at the shorter run's end
        rs = curves["random-scan Gibbs"]
        lines += ["", "Ratio deterministic / random-scan at equal samples and at equal time:", ""]
        for key in ("samples", "seconds"):
            x = min(det[key][-1], rs[key][-1])
            ratio = [
                np.exp(
                    np.interp(np.log(x), np.log(det[key]), np.log(det["rmse"][:, r]))
                    - np.interp(np.log(x), np.log(rs[key]), np.log(rs["rmse"][:, r]))
                )
                for r in (0, 1)
            ]
            lines.append(f"* equal {key} ({x:.4g}): E[m] {ratio[0]:.2f}, E[m^2] {ratio[1]:.2f}")
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    (out_dir / f"{stem}.md").write_text(text)


if __name__ == "__main__":
    main()
