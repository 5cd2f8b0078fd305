"""Time per step: kernels.involutive.hmc vs blackjax.hmc on a 100-d ill-conditioned Gaussian.

Both samplers get the same step size, diagonal inverse mass matrix and number of integration steps,
run the same number of steps inside one jitted ``jax.lax.scan`` (one chain, then vmapped chains),
after a warm-up call; compile time is reported separately. Timings of the two samplers are
interleaved and the median over repetitions is reported. Usage:

    python benchmarks/bench_involutive_vs_blackjax.py [--quick]
"""

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp

import kernels.involutive as inv

DIM = 100
VARIANCES = jnp.logspace(-2, 2, DIM)  # condition number 1e4


def logdensity(x):
    return -0.5 * jnp.sum(x**2 / VARIANCES)


def make_runner(algo, num_steps, num_chains):
    def one_chain(key):
        state = algo.init(jnp.ones(DIM))

        def body(state, key):
            state, info = algo.step(key, state)
            return state, info.acceptance_rate

        state, acc = jax.lax.scan(body, state, jax.random.split(key, num_steps))
        return state.position, jnp.mean(acc)

    if num_chains == 1:
        return jax.jit(one_chain)
    return jax.jit(lambda key: jax.vmap(one_chain)(jax.random.split(key, num_chains)))


def time_call(fn, key):
    start = time.perf_counter()
    jax.block_until_ready(fn(key))
    return time.perf_counter() - start


def bench(num_steps, num_chains, reps, step_size, num_integration_steps):
    algos = {
        "kernels.involutive.hmc": inv.hmc(logdensity, step_size, VARIANCES, num_integration_steps),
        "blackjax.hmc": blackjax.hmc(logdensity, step_size, VARIANCES, num_integration_steps),
    }
    key = jax.random.key(0)
    compiled, compile_s, acc = {}, {}, {}
    for name, algo in algos.items():
        runner = make_runner(algo, num_steps, num_chains)
        start = time.perf_counter()
        compiled[name] = runner.lower(key).compile()
        compile_s[name] = time.perf_counter() - start
        acc[name] = float(jnp.mean(compiled[name](key)[1]))  # warm-up
    times = {name: [] for name in algos}
    for r in range(reps):
        for name in algos if r % 2 == 0 else reversed(list(algos)):
            times[name].append(time_call(compiled[name], jax.random.key(r + 1)))
    per_step = {n: statistics.median(t) / num_steps * 1e6 for n, t in times.items()}
    return per_step, compile_s, acc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    args = parser.parse_args()
    num_steps, reps, chains = (200, 7, 16) if args.quick else (1000, 15, 64)
    step_size, num_integration_steps = 0.2, 10

    rows = []
    for num_chains in (1, chains):
        per_step, compile_s, acc = bench(
            num_steps, num_chains, reps, step_size, num_integration_steps
        )
        ours, peer = per_step["kernels.involutive.hmc"], per_step["blackjax.hmc"]
        rows.append(
            f"| {num_chains} | {num_steps} | {ours:.1f} | {peer:.1f} | {ours / peer:.3f} | "
            f"{compile_s['kernels.involutive.hmc']:.2f} | {compile_s['blackjax.hmc']:.2f} | "
            f"{acc['kernels.involutive.hmc']:.3f} | {acc['blackjax.hmc']:.3f} |"
        )
    header = (
        "| chains | steps | involutive us/step | blackjax us/step | ratio | "
        "compile involutive (s) | compile blackjax (s) | accept involutive | accept blackjax |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    machine = f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".strip()
    text = "\n".join(
        [
            "# kernels.involutive.hmc vs blackjax.hmc",
            "",
            f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}. Machine: {machine}, "
            f"JAX {jax.__version__} on {jax.devices()[0].platform}, blackjax {blackjax.__version__}.",
            f"Target: {DIM}-d Gaussian, variances logspace(-2, 2) (condition number 1e4); "
            f"step size {step_size}, diagonal inverse mass matrix = variances, "
            f"{num_integration_steps} leapfrog steps; float32; median of {reps} interleaved "
            f"repetitions{' (--quick)' if args.quick else ''}. Ratio = involutive / blackjax "
            "(target <= 1.10).",
            "",
            header,
            *rows,
            "",
        ]
    )
    print(text)
    out = Path(__file__).parent / "results" / "bench_involutive_vs_blackjax.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
