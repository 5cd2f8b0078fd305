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
import numpy as np

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
    median = {n: statistics.median(t) / num_steps * 1e6 for n, t in times.items()}
    best = {n: min(t) / num_steps * 1e6 for n, t in times.items()}
    return median, best, compile_s, acc


def ess_per_gradient(num_steps, num_chains, mala_step):
    """Min-over-coordinates ESS per gradient evaluation, MALA family, same step size."""
    from numpyro.diagnostics import effective_sample_size

    # blackjax.mala has no preconditioner: run it on the standardised target z = x / sd,
    # which is exactly MALA preconditioned by M^{-1} = diag(variances).
    sd = jnp.sqrt(VARIANCES)
    algos = {
        "kernels.involutive.mala": (inv.mala(logdensity, mala_step, VARIANCES), sd),
        "kernels.involutive.irreversible_mala (alpha=0.9)": (
            inv.irreversible_mala(logdensity, mala_step, VARIANCES, 0.9),
            sd,
        ),
        "blackjax.mala (standardised target)": (
            blackjax.mala(lambda z: -0.5 * jnp.sum(z**2), mala_step),
            jnp.ones(DIM),
        ),
    }
    rows = []
    for name, (algo, scale) in algos.items():

        def one_chain(key, algo=algo, scale=scale):
            def body(state, key):
                state, info = algo.step(key, state)
                return state, (state.position / scale, info.acceptance_rate)

            state = algo.init(scale * jax.random.normal(key, (DIM,)))
            return jax.lax.scan(body, state, jax.random.split(key, num_steps))[1]

        xs, acc = jax.jit(jax.vmap(one_chain))(jax.random.split(jax.random.key(3), num_chains))
        burn = num_steps // 5
        ess = effective_sample_size(np.asarray(xs[:, burn:], np.float64))
        grads = num_chains * (num_steps - burn)  # one gradient per step for all three
        rows.append(
            f"| {name} | {float(jnp.mean(acc)):.3f} | {ess.min():.0f} | {ess.min() / grads:.4f} |"
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    args = parser.parse_args()
    reps, chains = (7, 16) if args.quick else (15, 64)
    step_size, num_integration_steps = 0.2, 10

    rows = []
    sizes = ((1, 1000), (chains, 200)) if args.quick else ((1, 5000), (chains, 1000))
    for num_chains, num_steps in sizes:
        median, best, compile_s, acc = bench(
            num_steps, num_chains, reps, step_size, num_integration_steps
        )
        ours, peer = median["kernels.involutive.hmc"], median["blackjax.hmc"]
        ratio_best = best["kernels.involutive.hmc"] / best["blackjax.hmc"]
        rows.append(
            f"| {num_chains} | {num_steps} | {ours:.1f} | {peer:.1f} | {ours / peer:.3f} | "
            f"{ratio_best:.3f} | "
            f"{compile_s['kernels.involutive.hmc']:.2f} | {compile_s['blackjax.hmc']:.2f} | "
            f"{acc['kernels.involutive.hmc']:.3f} | {acc['blackjax.hmc']:.3f} |"
        )
    header = (
        "| chains | steps | involutive us/step | blackjax us/step | ratio (median) | ratio (best) | "
        "compile involutive (s) | compile blackjax (s) | accept involutive | accept blackjax |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    mala_step, ess_steps, ess_chains = 0.05, (1000 if args.quick else 4000), 4
    ess_rows = ess_per_gradient(ess_steps, ess_chains, mala_step)
    machine = f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".strip()
    text = "\n".join(
        [
            "# kernels.involutive.hmc vs blackjax.hmc",
            "",
            f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}. Machine: {machine}, "
            f"JAX {jax.__version__} on {jax.devices()[0].platform}, blackjax {blackjax.__version__}.",
            f"Target: {DIM}-d Gaussian, variances logspace(-2, 2) (condition number 1e4); "
            f"step size {step_size}, diagonal inverse mass matrix = variances, "
            f"{num_integration_steps} leapfrog steps; float32; {reps} interleaved repetitions"
            f"{' (--quick)' if args.quick else ''}: time per step is the median, ratio = "
            "involutive / blackjax of the medians and of the best repetitions (target <= 1.10); "
            "the machine is shared, so single-chain timings of a few us/step are noisy.",
            "",
            header,
            *rows,
            "",
            "## ESS per gradient evaluation (MALA family)",
            "",
            f"Same target, standardised coordinates; MALA step size h = {mala_step}, "
            f"inverse mass matrix = variances for the involutive kernels, {ess_chains} chains x "
            f"{ess_steps} steps (first 20% discarded); ESS from numpyro.diagnostics, minimum over "
            "the 100 coordinates. One gradient per step for every sampler.",
            "",
            "| sampler | acceptance | min ESS | min ESS / gradient |",
            "|---|---|---|---|",
            *ess_rows,
            "",
        ]
    )
    print(text)
    out = Path(__file__).parent / "results" / "bench_involutive_vs_blackjax.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
