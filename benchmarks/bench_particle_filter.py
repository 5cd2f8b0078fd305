"""ppl.ParticleFilter (bootstrap, NumPyro transition) vs the exact Kalman filter on a
linear-Gaussian state-space model: log Z error and time per run, particle-steps per second,
and scaling with the number of (forced host CPU) devices when the particles are sharded.

Usage: python benchmarks/bench_particle_filter.py [--quick]
"""

import os

# several host devices for the sharding rows: must be set before jax is imported
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ppl.state_space import ParticleFilter  # noqa: E402

A, Q, R, M0, S0 = 0.9, 0.5, 0.7, 0.0, 1.0


def transition(x, y):
    x = numpyro.sample("x", dist.Normal(A * x, Q))
    numpyro.sample("y", dist.Normal(x, R), obs=y)
    return x, x


def init():
    return numpyro.sample("x0", dist.Normal(M0, S0))


@jax.jit
def kalman_log_z(ys):
    """Scalar Kalman filter in JAX (the baseline)."""

    def body(c, y):
        m, p, lz = c
        mp, pp = A * m, A * A * p + Q * Q
        s = pp + R * R
        lz = lz - 0.5 * (jnp.log(2 * jnp.pi * s) + (y - mp) ** 2 / s)
        k = pp / s
        return (mp + k * (y - mp), (1 - k) * pp, lz), None

    (_, _, lz), _ = jax.lax.scan(body, (jnp.float32(M0), jnp.float32(S0**2), 0.0), ys)
    return lz


def simulate(T, seed=0):
    rng = np.random.default_rng(seed)
    x, ys = M0 + S0 * rng.normal(), []
    for _ in range(T):
        x = A * x + Q * rng.normal()
        ys.append(x + R * rng.normal())
    return jnp.asarray(ys, jnp.float32)


def bench(fn, reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(0))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    outs = [jax.block_until_ready(fn(i + 1)) for i in range(reps)]
    return compile_s, (time.perf_counter() - t) / reps, outs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    T = 100 if args.quick else 500
    sizes = (256, 1024, 4096) if args.quick else (256, 1024, 4096, 16384)
    reps = 5 if args.quick else 20
    ys = simulate(T)
    truth = float(kalman_log_z(ys))
    c_kf, t_kf, _ = bench(lambda i: kalman_log_z(ys + 0.0 * i), reps)

    lines = [
        "# bench_particle_filter",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, {jax.device_count()} forced host devices, jax {jax.__version__}",
        "",
        f"Scalar linear-Gaussian SSM, T={T}, bootstrap filter (systematic resampling at ESS < N/2), "
        f"{reps} seeds per row. Kalman filter (JAX, jitted): log Z = {truth:.3f}, "
        f"{t_kf * 1e3:.3f} ms per run (compile {c_kf:.2f} s).",
        "",
        "| N | devices | compile s | run ms | ratio vs Kalman | particle-steps / s "
        "| mean log Z - exact | sd log Z |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        for shard in (False, True):
            pf = ParticleFilter(transition, init, num_particles=n, shard=shard)

            def run(i, pf=pf):
                return pf.run(jax.random.PRNGKey(i), ys).log_Z

            c, t, outs = bench(run, reps)
            lz = np.asarray(outs, np.float64)
            devs = jax.device_count() if shard else 1
            lines.append(
                f"| {n} | {devs} | {c:.2f} | {t * 1e3:.2f} | {t / t_kf:.0f} | {n * T / t:.3g} "
                f"| {lz.mean() - truth:+.3f} | {lz.std(ddof=1):.3f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "bench_particle_filter.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
