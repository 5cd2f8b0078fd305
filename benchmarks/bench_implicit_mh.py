"""Implicit MH: sampling and training throughput, sample quality and TV bound vs training steps.

* Sampling throughput: ``kernels.implicit_mh.independent`` vs ``blackjax.irmh`` (BlackJAX's
  independent MH) running the same chain (2-d), vmapped chains in one jitted scan, timed after a
  compiling call (median of 5), compile time separately; with the exact ratio (Gaussian target,
  broad Gaussian proposal) and with a learned discriminator (``blackjax.irmh`` given
  ``logdensity = r`` and a flat proposal density, the same acceptance test).
* Discriminator training throughput: steps per second of ``fit_discriminator`` after
  compilation, from the difference of two runs of different lengths (compilation cancels).
* Quality vs training steps: 2-d Gaussian mixture known by 20000 samples, two independent
  Gaussian proposals: a broad one close enough that the bound can be informative
  (sup p/q = 5.6) and a very broad one (sup p/q = 15). Per number of steps: held-out loss, the
  pair loss's excess over the exact ratio's (paired estimate, + 2 s.e. enters the bound), the
  estimated contraction, the TV bound, the exact TV between the chain's stationary law
  q e^r / Z and p on a fine grid, and the energy distance of 1000 chains x 50 steps to fresh
  target samples.

CPU only here: no GPU was available, so no GPU figures are reported.

Usage: ``python benchmarks/bench_implicit_mh.py [--quick]``. Writes
``benchmarks/results/bench_implicit_mh.md``.
"""

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from kernels import implicit_mh as imh
from ppl.discriminator import fit_discriminator

MEANS = np.array([[-1.5, 0.0], [1.5, 0.5]])
SD = 0.5
PROPOSALS = {  # name: (mean, sd)
    "N((0, .25), diag(2, 1)^2)": (np.array([0.0, 0.25]), np.array([2.0, 1.0])),
    "N(0, 2.5^2 I)": (np.zeros(2), np.full(2, 2.5)),
}


def mixture(rng, n):
    return MEANS[rng.integers(0, 2, n)] + SD * rng.standard_normal((n, 2))


def log_p(x):
    return jnp.logaddexp(*[jnp.sum(norm.logpdf(x, m, SD), -1) for m in MEANS]) - jnp.log(2.0)


def timed(fn, *args, repeats=5):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return compile_s, float(np.median(ts))


def chain_runner(step, init, num_chains, num_steps):
    @jax.jit
    def go(key, x0):
        s = jax.vmap(init)(x0)

        def body(s, k):
            s, _ = jax.vmap(step)(jax.random.split(k, num_chains), s)
            return s, None

        return jax.lax.scan(body, s, jax.random.split(key, num_steps))[0].position

    return go


def throughput_rows(label, ours, peer, num_chains, num_steps):
    x0 = jnp.zeros((num_chains, 2))
    key = jax.random.key(0)
    c_o, t_o = timed(chain_runner(ours.step, ours.init, num_chains, num_steps), key, x0)
    c_p, t_p = timed(chain_runner(peer.step, peer.init, num_chains, num_steps), key, x0)
    n = num_chains * num_steps
    return [
        f"| {label} | kernels.implicit_mh.independent | {n / t_o:.3g} | {t_o:.3f} | {c_o:.2f} "
        f"| {t_o / t_p:.2f} |",
        f"| {label} | blackjax.irmh | {n / t_p:.3g} | {t_p:.3f} | {c_p:.2f} | 1 |",
    ]


def grid_tv(log_ratio, q_mean, q_sd):
    g = np.linspace(-9, 9, 361)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([X.ravel(), Y.ravel()], -1))
    log_q = jnp.sum(norm.logpdf(pts, q_mean, q_sd), -1)

    def normalise(lw):
        w = np.exp(np.asarray(lw - lw.max(), np.float64))
        return w / w.sum()

    t_inf, p, q = (
        normalise(log_q + jax.vmap(log_ratio)(pts)),
        normalise(log_p(pts)),
        normalise(log_q),
    )
    return 0.5 * np.abs(t_inf - p).sum(), 0.5 * np.abs(q - p).sum(), float(np.max(p / q))


def quality_table(name, target, fresh, steps_list, num_chains=1000, num_steps=50):
    q_mean, q_sd = PROPOSALS[name]

    def sample_q(key):
        return q_mean + q_sd * jax.random.normal(key, (2,))

    def exact(x):
        return log_p(x) - jnp.sum(norm.logpdf(x, q_mean, q_sd), -1)

    prop = jax.vmap(sample_q)(jax.random.split(jax.random.key(9), num_chains))
    e_prop = float(imh.energy_distance(prop, fresh))
    _, tv_q, sup_ratio = grid_tv(exact, q_mean, q_sd)
    x0 = jax.vmap(sample_q)(jax.random.split(jax.random.key(4), num_chains))
    rows = []
    for steps in steps_list:
        t0 = time.perf_counter()
        fit = fit_discriminator(
            jax.random.key(1), target, sample_q, num_steps=steps, exact_log_ratio=exact
        )
        jax.block_until_ready(fit.loss_history)
        wall = time.perf_counter() - t0
        alg = imh.independent(sample_q, fit.log_ratio)
        pos = chain_runner(alg.step, alg.init, num_chains, num_steps)(jax.random.key(3), x0)
        e = float(imh.energy_distance(pos, fresh))
        tv, _, _ = grid_tv(fit.log_ratio, q_mean, q_sd)
        rows.append(
            f"| {steps} | {float(fit.loss):.4f} | {float(fit.pair_loss):.4f} "
            f"| {float(fit.excess_loss):.4f} | {float(fit.contraction):.3f} "
            f"| {float(fit.tv_bound):.3f} | {tv:.4f} | {e:.4f} | {wall:.1f} |"
        )
        print(rows[-1], flush=True)
    return [
        f"### Proposal {name}: sup p/q = {sup_ratio:.1f}, TV(q, p) = {tv_q:.3f}, "
        f"energy distance (proposal, target) = {e_prop:.4f}",
        "",
        "| steps | held-out loss | pair loss L(d) | excess L(d) - L(d*) + 2 se | rho | TV bound "
        "| TV(t_inf, p), grid | energy distance (chain, target) | fit wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer chains and training lengths")
    args = ap.parse_args()
    num_chains, num_steps = (1000, 200) if args.quick else (4000, 500)
    lines = [
        "# bench_implicit_mh",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
        f"{platform.processor() or ''}, {os.cpu_count()} CPUs, JAX {jax.__version__} on "
        f"{jax.default_backend()}, blackjax {blackjax.__version__}; quick={args.quick}. "
        "CPU only: no GPU was available for this run, so there are no GPU figures.",
        "",
    ]

    # --- discriminator, trained once for the learned-ratio throughput
    rng = np.random.default_rng(0)
    target = mixture(rng, 20000)
    fresh = jnp.asarray(mixture(np.random.default_rng(1), 1000))
    floor = float(imh.energy_distance(jnp.asarray(mixture(np.random.default_rng(2), 1000)), fresh))
    q_mean, q_sd = PROPOSALS["N((0, .25), diag(2, 1)^2)"]

    def sample_q(key):
        return q_mean + q_sd * jax.random.normal(key, (2,))

    # --- sampling throughput, same chain as blackjax.irmh
    lp = lambda x: jnp.sum(norm.logpdf(x, 1.0, 0.5))  # noqa: E731
    lq = lambda x: jnp.sum(norm.logpdf(x, 0.0, 2.0))  # noqa: E731
    sample_g = lambda k: 2.0 * jax.random.normal(k, (2,))  # noqa: E731
    rows = throughput_rows(
        "exact ratio (Gaussians)",
        imh.independent(sample_g, lambda x: lp(x) - lq(x)),
        blackjax.irmh(lp, sample_g, lambda new, prev: lq(new.position)),
        num_chains,
        num_steps,
    )
    fit = fit_discriminator(jax.random.key(0), target, sample_q, num_steps=1000)
    rows += throughput_rows(
        "learned ratio (MLP 64x64)",
        imh.independent(sample_q, fit.log_ratio),
        blackjax.irmh(fit.log_ratio, sample_q, lambda new, prev: 0.0),
        num_chains,
        num_steps,
    )
    lines += [
        f"## Sampling throughput ({num_chains} chains x {num_steps} steps, 2-d, CPU)",
        "",
        "| log ratio | sampler | samples/s | time (s) | compile (s) | time ours / blackjax |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]

    # --- training throughput after compilation
    short, long = (500, 5500) if args.quick else (1000, 11000)
    walls = {}
    for steps in (short, long):
        t0 = time.perf_counter()
        f = fit_discriminator(jax.random.key(2), target, sample_q, num_steps=steps)
        jax.block_until_ready(f.loss_history)
        walls[steps] = time.perf_counter() - t0
    rate = (long - short) / (walls[long] - walls[short])
    overhead = walls[short] - short / rate
    lines += [
        "## Discriminator training (batch 256 target + 256 proposal, MLP 64x64, Adam, cosine decay)",
        "",
        f"{rate:.0f} steps/s after compilation ({rate * 512:.3g} samples/s), from "
        f"fit_discriminator runs of {short} and {long} steps ({walls[short]:.2f} s and "
        f"{walls[long]:.2f} s); compilation and evaluation overhead per call {overhead:.2f} s.",
        "",
    ]

    # --- quality vs training steps
    steps_list = [100, 300, 1000, 3000] if args.quick else [100, 300, 1000, 3000, 10000]
    lines += [
        "## Sample quality and TV bound vs discriminator training steps",
        "",
        "Target: equal mixture of N((-1.5, 0), 0.5^2 I) and N((1.5, 0.5), 0.5^2 I), known by 20000 "
        "samples (20% held out). TV bound = min(1, 2 sqrt(excess) / (1 - rho)) with the excess "
        "pair loss over the exact ratio's (paired estimate on 65536 held-out pairs + 2 s.e.; the "
        "exact ratio is known in this synthetic check only) and rho = 1 - 1/M estimated from "
        "samples. Without L(d*) (the default loss_optimal = 0) the bound is 1 in every row. "
        f"Energy distance between two sets of 1000 fresh target samples (noise floor): {floor:.4f}.",
        "",
    ]
    for name in PROPOSALS:
        lines += quality_table(name, target, fresh, steps_list)
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "bench_implicit_mh.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
