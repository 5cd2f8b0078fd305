"""Orbital HMC vs BlackJAX NUTS: ESS per gradient evaluation and per second (after compilation).

Target: 100-d Gaussian with standard deviations log-spaced over [0.01, 1] (condition number 1e4).
Both samplers get the same step size and diagonal inverse mass matrix from BlackJAX's window
adaptation (NUTS). Orbital HMC uses period P (P - 1 gradients per step). Minimum and median bulk
ESS over coordinates (numpyro.diagnostics.effective_sample_size over independent chains).

    python benchmarks/bench_orbital.py [--quick]
"""

import argparse
import datetime
import platform
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import effective_sample_size

import kernels.orbital as orb

D = 100
SIGMA = jnp.logspace(-2, 0, D)


def logdensity(x):
    return -0.5 * jnp.sum((x / SIGMA) ** 2)


def run(alg, key, x0, steps, grads_of):
    def one(key, x):
        def body(s, k):
            s, info = alg.step(k, s)
            return s, (s.position, grads_of(info))

        _, (xs, g) = jax.lax.scan(body, alg.init(x), jax.random.split(key, steps))
        return xs, g.sum()

    return jax.jit(jax.vmap(one))(jax.random.split(key, x0.shape[0]), x0)


def timed(fn, *args):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    t_run = time.perf_counter() - t
    return out, t_run, t_first - t_run


def ess(xs):
    e = np.asarray(effective_sample_size(np.asarray(xs)))
    return e.min(), np.median(e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    chains, steps = (4, 500) if args.quick else (4, 2000)
    x0 = jnp.asarray(np.random.default_rng(0).normal(size=(chains, D))) * SIGMA
    warm = blackjax.window_adaptation(blackjax.nuts, logdensity)
    (state, params), _ = warm.run(jax.random.key(0), x0[0], num_steps=500 if args.quick else 1000)
    eps, imm = float(params["step_size"]), params["inverse_mass_matrix"]
    nuts = blackjax.nuts(logdensity, eps, imm)
    rows = []
    (xs, g), t, tc = timed(
        lambda k, x: run(nuts, k, x, steps, lambda i: i.num_integration_steps),
        jax.random.key(1),
        x0,
    )
    rows.append(("BlackJAX NUTS", xs, float(np.sum(g)), t, tc))
    for period in (8, 16):
        alg = orb.orbital_hmc(logdensity, eps, imm, period, momentum_persistence=0.0)
        (xs, g), t, tc = timed(
            lambda k, x, a=alg: run(a, k, x, steps, lambda i: i.num_grad_evals),
            jax.random.key(2),
            x0,
        )
        rows.append((f"orbital HMC P={period}", xs, float(np.sum(g)), t, tc))
    ref = None
    lines = [
        "# bench_orbital",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"jax {jax.__version__}, {jax.devices()[0].platform}",
        "",
        f"100-d Gaussian, sd log-spaced 0.01..1; {chains} chains x {steps} steps; step size {eps:.4f} "
        "and diagonal mass matrix from BlackJAX window adaptation (shared).",
        "",
        "| sampler | min ESS | median ESS | grads | min ESS/grad | ratio vs NUTS | min ESS/s "
        "| ratio vs NUTS | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, xs, g, t, tc in rows:
        emin, emed = ess(xs)
        pg, ps = emin / g, emin / t
        if ref is None:
            ref = (pg, ps)
        lines.append(
            f"| {name} | {emin:.0f} | {emed:.0f} | {g:.0f} | {pg:.2e} | {pg / ref[0]:.2f} "
            f"| {ps:.0f} | {ps / ref[1]:.2f} | {tc:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    (Path(__file__).parent / "results" / "bench_orbital.md").write_text(text)


if __name__ == "__main__":
    main()
