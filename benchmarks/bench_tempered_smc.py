"""ppl.TemperedSMC vs blackjax.adaptive_tempered_smc on a NumPyro model (Bayesian linear
regression, exact log Z known): same particles, same HMC move (BlackJAX HMC, fixed step size,
same number of steps per temperature), same target ESS. Time per run after compilation, compile
time separately, and the spread of log Z over seeds.

Usage: python benchmarks/bench_tempered_smc.py [--quick]
"""

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ppl.bdmc import bdmc  # noqa: E402
from ppl.smc import TemperedSMC, split_model  # noqa: E402


def model(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ w, 0.5).to_event(1), obs=y)


def exact_log_z(X, y):
    n = X.shape[0]
    return stats.multivariate_normal(np.zeros(n), 0.25 * np.eye(n) + X @ X.T).logpdf(y)


def blackjax_run(dens, num_particles, num_mcmc_steps, params, target_ess):
    smc = blackjax.adaptive_tempered_smc(
        dens.log_prior,
        dens.log_likelihood,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        blackjax.smc.extend_params({k: jnp.asarray(v) for k, v in params.items()}),
        resampling_fn=blackjax.smc.resampling.systematic,
        target_ess=target_ess,
        num_mcmc_steps=num_mcmc_steps,
    )

    @jax.jit
    def run(key):
        k0, key = jax.random.split(key)
        u0 = jax.vmap(dens.sample_prior)(jax.random.split(k0, num_particles))
        state = smc.init(u0)

        def cond(c):
            return c[0].tempering_param < 1

        def body(c):
            state, key, log_z, k = c
            key, sub = jax.random.split(key)
            state, info = smc.step(sub, state)
            return state, key, log_z + info.log_likelihood_increment, k + 1

        state, _, log_z, k = jax.lax.while_loop(cond, body, (state, key, 0.0, 0))
        return log_z, k

    return run


def timed_interleaved(fns, keys):
    """Compile each function on ``keys[0]``, then run them round-robin on ``keys[1:]`` (so that
    load from other processes hits all alike); median time per run."""
    compile_s, times, outs = [], [[] for _ in fns], [[] for _ in fns]
    for fn in fns:
        t = time.perf_counter()
        jax.block_until_ready(fn(keys[0]))
        compile_s.append(time.perf_counter() - t)
    for k in keys[1:]:
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            outs[i].append(jax.block_until_ready(fn(k)))
            times[i].append(time.perf_counter() - t)
    return compile_s, [float(np.median(t)) for t in times], outs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n_data, dim = (50, 5) if args.quick else (200, 10)
    num_particles = 1000 if args.quick else 2000
    seeds = 30 if args.quick else 50
    num_mcmc_steps, step_size, n_leap = 3, 0.1, 5
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_data, dim))
    y = X @ rng.normal(size=dim) + 0.5 * rng.normal(size=n_data)
    truth = exact_log_z(X, y)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    dens = split_model(model, (Xj,), {"y": yj})
    params = {
        "step_size": step_size,
        "inverse_mass_matrix": jnp.ones(dim),
        "num_integration_steps": n_leap,
    }
    keys = list(jax.random.split(jax.random.PRNGKey(1), seeds + 1))

    bj = blackjax_run(dens, num_particles, num_mcmc_steps, params, 0.5)
    labels, fns = ["blackjax.adaptive_tempered_smc"], [bj]
    for label, adapt in (
        ("ppl.TemperedSMC (fixed step)", False),
        ("ppl.TemperedSMC (adapted)", True),
    ):
        smc = TemperedSMC(
            model,
            blackjax.hmc,
            num_particles=num_particles,
            num_mcmc_steps=num_mcmc_steps,
            kernel_params=params,
            target_ess=0.5,
            ess_threshold=1.0,
            adapt_step_size=adapt,
            adapt_mass_matrix=adapt,
        )

        def ours(k, smc=smc):
            r = smc.run(k, Xj, y=yj)
            return r.log_Z, r.num_steps

        labels.append(label)
        fns.append(ours)
    compile_s, times, outs = timed_interleaved(fns, keys)
    rows = []
    for label, c, t, out in zip(labels, compile_s, times, outs, strict=True):
        lz = np.array([float(o[0]) for o in out])
        rows.append((label, c, t, lz, float(np.mean([int(o[1]) for o in out]))))

    t_ref = rows[0][2]
    lines = [
        "# bench_tempered_smc",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
        f"{platform.processor() or ''}, {jax.device_count()} {jax.default_backend()} device(s) "
        f"(no GPU lent), 2 CPU cores shared with other jobs, jax {jax.__version__}, blackjax "
        f"{blackjax.__version__}{' (--quick)' if args.quick else ''}",
        "",
        f"Bayesian linear regression n={n_data}, d={dim}, N={num_particles} particles, "
        f"HMC move ({num_mcmc_steps} steps x {n_leap} leapfrog, step 0.1), target ESS 0.5, "
        f"resampling every temperature, {seeds} seeds. Exact log Z = {truth:.3f}.",
        "",
        "| sampler | compile s | run s (median) | time ratio vs BlackJAX | temperatures "
        "| time per temperature ratio | mean log Z - exact | sd log Z | sd ratio vs BlackJAX "
        "(95% F interval) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    k_ref, sd_ref = rows[0][4], rows[0][3].std(ddof=1)
    for label, c, t, lz, k in rows:
        sd = lz.std(ddof=1)
        lo_f, hi_f = stats.f.ppf([0.975, 0.025], seeds - 1, seeds - 1)
        ci = f"{sd / sd_ref:.2f} ({sd / sd_ref / np.sqrt(lo_f):.2f}-{sd / sd_ref / np.sqrt(hi_f):.2f})"
        lines.append(
            f"| {label} | {c:.2f} | {t:.3f} | {t / t_ref:.2f} | {k:.1f} "
            f"| {(t / k) / (t_ref / k_ref):.2f} | {lz.mean() - truth:+.3f} | {sd:.3f} | {ci} |"
        )
    lines += bdmc_section(Xj, X, args.quick)
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "bench_tempered_smc.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


def bdmc_section(Xj, X, quick):
    """ppl.bdmc on simulated data sets: the sandwich against the exact log Z, versus N."""
    sizes = (1, 4, 16, 64) if quick else (1, 4, 16, 64, 256)
    runs = 16 if quick else 64
    key = jax.random.PRNGKey(7)
    schedule = None
    rows, stats_ = [], []
    for n in sizes:
        t = time.perf_counter()
        res = bdmc(
            key,
            model,
            Xj,
            observed="y",
            num_particles=n,
            num_runs=runs,
            schedule=schedule,
            num_mcmc_steps=2,
            kernel_params={"num_integration_steps": 5},
        )
        jax.block_until_ready(res.upper)
        secs = time.perf_counter() - t
        schedule = res.schedule  # one pilot, shared by every N
        truth = np.array([exact_log_z(X, y) for y in np.asarray(res.data["y"], np.float64)])
        lo = np.asarray(res.lower, np.float64) - truth
        up = np.asarray(res.upper, np.float64) - truth
        se = lambda v: v.std(ddof=1) / np.sqrt(v.size)  # noqa: E731
        stats_.append((n, lo.mean(), se(lo), up.mean(), se(up)))
        rows.append(
            f"| {n} | {lo.mean():+.3f} ± {se(lo):.3f} | {up.mean():+.3f} ± {se(up):.3f} "
            f"| {(up - lo).mean():.3f} | {int(lo.max() <= 0 + np.log(2 * runs / 0.05))}"
            f"{int(up.min() >= -np.log(2 * runs / 0.05))} | {secs:.1f} |"
        )
    K = int(schedule.betas.shape[0] - 1)
    out = [
        "",
        f"## ppl.bdmc: the sandwich vs N ({runs} simulated data sets, exact log Z per data set, "
        f"frozen pilot schedule with {K} temperatures, HMC 2 x 5 leapfrog)",
        "",
        "| N | E[L] - log Z | E[U] - log Z | mean gap | bracket ok (L, U) | wall s (incl. compile) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n, lm, ls, um, us = (np.array(c) for c in zip(*stats_, strict=True))
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.errorbar(n, lm, 2 * ls, marker="o", label="lower: forward SMC / AIS")
        ax.errorbar(n, um, 2 * us, marker="s", label="upper: conditional SMC / reverse AIS")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("particles N")
        ax.set_ylabel("bound - exact log Z")
        ax.set_title("ppl.bdmc, Bayesian linear regression")
        ax.legend(fontsize=8)
        fig.tight_layout()
        for path in (
            Path(__file__).parent / "results" / "bench_tempered_smc_bdmc.png",
            Path(__file__).parent.parent / "docs" / "img" / "smc_numpyro_bdmc.png",
        ):
            path.parent.mkdir(exist_ok=True)
            fig.savefig(path, dpi=120)
        out += ["", "![bdmc sandwich](bench_tempered_smc_bdmc.png)"]
    except ImportError:
        pass
    return out


if __name__ == "__main__":
    main()
