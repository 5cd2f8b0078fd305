"""Implicit MH: discriminator training and sampling throughput, quality vs training steps.

Throughput: ``kernels.implicit_mh.independent`` vs ``blackjax.irmh`` (BlackJAX's independent
MH) on the same exact-ratio problem (2-d Gaussian target, broad Gaussian proposal), vmapped chains,
timed after JIT warm-up; compile time separately. Quality: on a 2-d Gaussian mixture known by
samples, the learned chain's energy distance to the target vs discriminator training steps.

Usage: ``python benchmarks/bench_implicit_mh.py [--quick]``. Writes
``benchmarks/results/bench_implicit_mh.md``.
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
from jax.scipy.stats import norm

from kernels import implicit_mh as imh

MEANS = np.array([[-1.5, 0.0], [1.5, 0.5]])


def mixture(rng, n):
    return MEANS[rng.integers(0, 2, n)] + 0.5 * rng.standard_normal((n, 2))


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    num_chains, num_steps = (1000, 200) if args.quick else (4000, 500)
    lines = [
        "# bench_implicit_mh",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
        f"{platform.processor() or ''}, backend {jax.default_backend()} "
        f"({jax.device_count()} devices); CPU only, no GPU available here. quick={args.quick}",
        "",
    ]

    # --- sampling throughput, exact ratio, ours vs blackjax.irmh
    lp = lambda x: jnp.sum(norm.logpdf(x, 1.0, 0.5))  # noqa: E731
    lq = lambda x: jnp.sum(norm.logpdf(x, 0.0, 2.0))  # noqa: E731
    sample_q = lambda k: 2.0 * jax.random.normal(k, (2,))  # noqa: E731
    ours = imh.independent(sample_q, lambda x: lp(x) - lq(x))
    peer = blackjax.irmh(lp, sample_q, lambda new, prev: lq(new.position))
    x0 = jnp.zeros((num_chains, 2))
    key = jax.random.key(0)
    c_o, t_o = timed(chain_runner(ours.step, ours.init, num_chains, num_steps), key, x0)
    c_p, t_p = timed(chain_runner(peer.step, peer.init, num_chains, num_steps), key, x0)
    n = num_chains * num_steps
    lines += [
        f"## Sampling throughput (exact ratio, {num_chains} chains x {num_steps} steps, 2-d)",
        "",
        "| sampler | samples/s | compile (s) | time (s) |",
        "|---|---|---|---|",
        f"| kernels.implicit_mh.independent | {n / t_o:.3g} | {c_o:.2f} | {t_o:.3f} |",
        f"| blackjax.irmh | {n / t_p:.3g} | {c_p:.2f} | {t_p:.3f} |",
        "",
        f"ratio time(ours)/time(blackjax) = {t_o / t_p:.2f}",
        "",
    ]

    # --- discriminator training throughput and quality vs steps
    rng = np.random.default_rng(0)
    target = mixture(rng, 4000)
    fresh = jnp.asarray(mixture(np.random.default_rng(1), 1000))
    sq = lambda k: 2.5 * jax.random.normal(k, (2,))  # noqa: E731
    prop = jax.vmap(sq)(jax.random.split(jax.random.key(9), 1000))
    e_prop = float(imh.energy_distance(prop, fresh))
    steps_list = [50, 200, 500, 1000] if args.quick else [50, 200, 500, 1000, 2000, 4000]
    rows = []
    train_rate = None
    for steps in steps_list:
        t0 = time.perf_counter()
        fit = imh.fit_discriminator(jax.random.key(1), target, sq, num_steps=steps)
        jax.block_until_ready(fit.loss_history)
        wall = time.perf_counter() - t0
        if steps == steps_list[-1]:
            t0 = time.perf_counter()
            fit2 = imh.fit_discriminator(jax.random.key(2), target, sq, num_steps=steps)
            jax.block_until_ready(fit2.loss_history)
            train_rate = steps / (time.perf_counter() - t0)  # includes compile of a fresh closure
        alg = imh.independent(sq, fit.log_ratio)
        pos = chain_runner(alg.step, alg.init, 1000, 50)(jax.random.key(3), jnp.zeros((1000, 2)))
        e = float(imh.energy_distance(pos, fresh))
        rows.append(
            f"| {steps} | {float(fit.loss):.4f} | {float(fit.tv_bound):.3f} | {e:.4f} | {wall:.2f} |"
        )
    lines += [
        "## Discriminator training (batch 256, MLP 64x64, Adam) and quality vs steps",
        "",
        f"Training throughput: {train_rate:.0f} steps/s ({train_rate * 512:.3g} samples/s, "
        "target + proposal), including jit compile.",
        "",
        f"Energy distance of proposal samples to the target: {e_prop:.4f}. Chains: 1000 x 50 steps.",
        "",
        "| steps | discriminator loss | TV bound | energy distance (chain, target) | fit wall (s) |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "bench_implicit_mh.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
