"""Orbital HMC (ppl.OrbitalMCMC) vs NumPyro NUTS and BlackJAX NUTS: ESS per gradient and per second.

Targets (float64):

* the seven posteriordb posteriors (``benchmarks.posteriordb``), dense mass matrix, target
  acceptance = the reference run's ``adapt_delta`` for every sampler;
* two 100-d Gaussians with variances log-spaced over [1e-2, 1e2] (condition number 1e4),
  diagonal mass matrix: ``gauss100`` axis-aligned (the diagonal mass matrix whitens it) and
  ``gauss100_rotated`` (the same spectrum in a random rotation: the diagonal mass matrix cannot
  whiten it, the sampler faces the full condition number).

Samplers, each with its own warmup (same number of warmup and sampling iterations, vectorized
chains):

* ``OrbitalMCMC``: orbital HMC with NumPyro's warmup (dual averaging, windowed mass matrix),
  window fixed in integration time ``T`` (``--trajectory-length``), random window offset and
  the weight rotation ``r`` (``--rotation``);
* ``NumPyro NUTS``: ``numpyro.infer.NUTS``;
* ``BlackJAX NUTS``: ``blackjax.window_adaptation`` + ``blackjax.nuts`` on NumPyro's potential.

All chains of all samplers start at the reference posterior mean (from random starts either NUTS
sometimes leaves a chain in arma11's non-invertible MA region with a collapsed step size, which
would measure robustness to a bad start rather than efficiency).

Columns: max |z| of the means and of the sd ratios over parameters against the reference
(posteriordb's Stan draws, or the exact moments for the Gaussians;
``benchmarks.posteriordb.Posterior.agreement``), min ESS of the mean over parameters (arviz),
the same for the squared deviations (x - mean)^2 (second moments: an antithetic chain has a
large ESS for the mean but not for these), gradient evaluations of the sampling phase, both ESS
per 1000 gradients, ESS per second of the
sampling phase (one jitted scan, best of three calls after a first call that compiles), compile
time of that scan, and warmup time (compilation included). Ratios are ours / peer from the same
run. A benchmark, not a test: nothing here asserts a time.

    python benchmarks/bench_orbital.py [--quick] [--names arma11 gauss100] [--trajectory-length 4]
"""

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import arviz as az  # noqa: E402
import blackjax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import NUTS  # noqa: E402

from benchmarks.posteriordb import SHORT_NAMES, Posterior, load  # noqa: E402
from benchmarks.posteriordb.bench_posteriordb import (  # noqa: E402
    initial_positions,
    measure,
)
from ppl import OrbitalMCMC  # noqa: E402
from ppl.orbital import DEFAULT_TRAJECTORY_LENGTH  # noqa: E402

GAUSSIANS = ("gauss100", "gauss100_rotated")
QUICK = ("arma11", "earnings", "nes2000", "kilpisjarvi", "gauss100")
DIM = 100
PEERS = ("NumPyro NUTS", "BlackJAX NUTS")


def gaussian(name: str) -> Posterior:
    """A 100-d zero-mean Gaussian as a :class:`Posterior` with exact reference moments."""
    variances = np.logspace(-2, 2, DIM)
    if name == "gauss100":
        cov = np.diag(variances)
    else:
        q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, DIM)))
        cov = q @ np.diag(variances) @ q.T
    scale_tril = np.linalg.cholesky(cov)

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(DIM), scale_tril=scale_tril))

    sd = np.sqrt(np.diag(cov))
    reference = {f"x[{i + 1}]": (0.0, s, -1.645 * s, 1.645 * s) for i, s in enumerate(sd)}
    # exact reference: an enormous ndraws makes its Monte Carlo term vanish in the z-scores
    return Posterior(name, model, {}, reference, 10**15, {})


class _Recorder:
    """A :class:`Posterior` that keeps the samples ``measure`` passes to ``agreement``."""

    def __init__(self, post):
        self.post, self.samples = post, None

    def __getattr__(self, name):
        return getattr(self.post, name)

    def agreement(self, samples):
        self.samples = samples
        return self.post.agreement(samples)


def ess_of_squares(post, samples):
    """Min over parameters of arviz's ESS (for the mean) of (x - mean)^2."""
    draws = post.to_stan_names(samples)
    return min(
        float(az.ess(np.asarray((x - x.mean()) ** 2, np.float64), method="mean"))
        for x in draws.values()
    )


def measure_with_squares(post, kernel, *args, **kwargs):
    """``bench_posteriordb.measure`` plus the ESS of the squared deviations."""
    recorder = _Recorder(post)
    out = measure(recorder, kernel, *args, **kwargs)
    out["ess_sq"] = ess_of_squares(post, recorder.samples)
    return out


def measure_blackjax_nuts(post, z0, num_warmup, num_samples, num_chains, seed, dense, target):
    """BlackJAX window adaptation per chain (vmapped) from ``z0``, then NUTS as one jitted scan."""
    _, potential_fn, postprocess = initial_positions(post, 1, seed)
    keys = jax.random.split(jax.random.key(seed), num_chains)

    def logdensity(z):
        return -potential_fn(z)

    warmup = blackjax.window_adaptation(
        blackjax.nuts,
        logdensity,
        is_mass_matrix_diagonal=not dense,
        target_acceptance_rate=target,
    )
    start = time.perf_counter()
    run_warmup = jax.jit(jax.vmap(lambda k, z: warmup.run(k, z, num_steps=num_warmup)[0]))
    states, params = jax.block_until_ready(run_warmup(jax.random.split(keys[0], num_chains), z0))
    warmup_s = time.perf_counter() - start

    def chain(key, state, step_size, inverse_mass_matrix):
        nuts = blackjax.nuts(logdensity, step_size, inverse_mass_matrix)

        def body(s, k):
            s, info = nuts.step(k, s)
            return s, (s.position, info.num_integration_steps)

        return jax.lax.scan(body, state, jax.random.split(key, num_samples))[1]

    sample_phase = jax.jit(jax.vmap(chain))
    args = (
        jax.random.split(keys[-1], num_chains),
        states,
        params["step_size"],
        params["inverse_mass_matrix"],
    )
    times = []
    for _ in range(4):  # the first call compiles; the best of the next three is reported
        start = time.perf_counter()
        zs, steps = jax.block_until_ready(sample_phase(*args))
        times.append(time.perf_counter() - start)
    samples = jax.tree.map(np.asarray, jax.vmap(jax.vmap(postprocess))(zs))
    table = post.agreement(samples)
    ess = min(a.ess for a in table.values())
    grads = int(np.sum(np.asarray(steps, np.int64)))
    ess_sq = ess_of_squares(post, samples)
    sample_s = min(times[1:])
    return {
        "z_mean": max(abs(a.z_mean) for a in table.values()),
        "z_sd": max(abs(a.z_sd) for a in table.values()),
        "ess": ess,
        "ess_sq": ess_sq,
        "grads": grads,
        "ess_per_kgrad": 1000.0 * ess / grads,
        "ess_per_s": ess / sample_s,
        "sample_s": sample_s,
        "compile_s": max(times[0] - sample_s, 0.0),
        "warmup_s": warmup_s,
    }


def _failed(r):
    """A run whose draws disagree with the reference or barely move (stuck chains)."""
    return max(r["z_mean"], r["z_sd"]) > 5 or r["ess"] < 20


def bench_one(name, args):
    post = gaussian(name) if name in GAUSSIANS else load(name)
    dense = name not in GAUSSIANS
    target = getattr(post, "adapt_delta", 0.8)
    common = (args.num_warmup, args.num_samples, args.num_chains, args.seed)
    results = {}
    with jax.enable_x64(True):
        z0 = initial_positions(post, args.num_chains, args.seed)[0]
        ours = OrbitalMCMC(
            post.model,
            trajectory_length=args.trajectory_length,
            rotation=args.rotation,
            dense_mass=dense,
            target_accept_prob=target,
            max_period=args.max_period,
        )
        results["OrbitalMCMC"] = measure_with_squares(post, ours, *common, init_params=z0)
        nuts = NUTS(post.model, dense_mass=dense, target_accept_prob=target)
        results["NumPyro NUTS"] = measure_with_squares(post, nuts, *common, init_params=z0)
        results["BlackJAX NUTS"] = measure_blackjax_nuts(post, z0, *common, dense, target)
    return post, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="four small posteriors + gauss100")
    parser.add_argument("--names", nargs="*", help="posteriordb short names, gauss100(_rotated)")
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--trajectory-length", type=float, default=DEFAULT_TRAJECTORY_LENGTH)
    parser.add_argument("--rotation", type=float, default=0.5, help="negative: None")
    parser.add_argument(
        "--max-period", type=int, default=128, help="OrbitalMCMC: at most this many window points"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="markdown output (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.rotation < 0:
        args.rotation = None
    if args.quick:
        args.num_warmup, args.num_samples, args.num_chains = 500, 500, 2
    names = args.names or (QUICK if args.quick else (*SHORT_NAMES, *GAUSSIANS))
    unknown = [n for n in names if n not in SHORT_NAMES and n not in GAUSSIANS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {[*SHORT_NAMES, *GAUSSIANS]}")

    rows, ratios, wins, failures = [], [], {p: [] for p in PEERS}, []
    for name in names:
        post, res = bench_one(name, args)
        for sampler, r in res.items():
            rows.append(
                f"| {name} ({post.num_params}) | {sampler} | {r['z_mean']:.2f} | {r['z_sd']:.2f} "
                f"| {r['ess']:.0f} | {r['ess_sq']:.0f} | {r['grads']} | {r['ess_per_kgrad']:.1f} "
                f"| {1000 * r['ess_sq'] / r['grads']:.1f} | {r['ess_per_s']:.0f} "
                f"| {r['sample_s']:.2f} | {r['compile_s']:.2f} | {r['warmup_s']:.1f} |"
            )
            print(rows[-1], flush=True)
        failed = [sampler for sampler, r in res.items() if _failed(r)]
        if failed:
            failures.append(f"{name}: {', '.join(failed)}")
        ours = res["OrbitalMCMC"]
        cells = []
        for peer in PEERS:
            g = ours["ess_per_kgrad"] / res[peer]["ess_per_kgrad"]
            g2 = (ours["ess_sq"] / ours["grads"]) / (res[peer]["ess_sq"] / res[peer]["grads"])
            t = ours["ess_per_s"] / res[peer]["ess_per_s"]
            if not (_failed(ours) or _failed(res[peer])):
                wins[peer].append(g > 1)
            mark = " (peer failed)" if _failed(res[peer]) else ""
            mark = " (ours failed)" if _failed(ours) else mark
            cells += [f"{g:.2f}{mark}", f"{g2:.2f}", f"{t:.2f}"]
        ratios.append(f"| {name} | " + " | ".join(cells) + " |")
    ratio_header = (
        "| target | ESS/grad vs NumPyro NUTS | ESS(x^2)/grad vs NumPyro NUTS "
        "| ESS/s vs NumPyro NUTS | ESS/grad vs BlackJAX NUTS | ESS(x^2)/grad vs BlackJAX NUTS "
        "| ESS/s vs BlackJAX NUTS |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    header = (
        "| target (params) | sampler | max abs z mean | max abs z sd | min ESS | min ESS (x^2) "
        "| grads | ESS / 1000 grads | ESS(x^2) / 1000 grads | ESS / s | sampling s | compile s "
        "| warmup s |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rot = "none (draw from the weights)" if args.rotation is None else f"{args.rotation:g}"
    summary = "; ".join(
        f"ESS/grad above {peer} on {sum(w)} of {len(w)} targets where both converged"
        for peer, w in wins.items()
    )
    if failures:
        summary += (
            ". Did not converge (max |z| > 5 or min ESS < 20, the ratio measures the failure, "
            "not efficiency): " + "; ".join(failures)
        )
    text = "\n".join(
        [
            "# Orbital HMC vs NumPyro NUTS and BlackJAX NUTS",
            "",
            f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Machine: "
            f"{platform.platform()}, {platform.processor() or platform.machine()}, "
            f"JAX {jax.__version__} on {jax.default_backend()}.",
            f"Settings: {args.num_chains} vectorized chains, {args.num_warmup} warmup and "
            f"{args.num_samples} draws per chain, float64; posteriordb: dense mass matrix, "
            "target acceptance = the reference run's adapt_delta; Gaussians: diagonal mass "
            f"matrix, target 0.8. OrbitalMCMC: trajectory length {args.trajectory_length:.3f}, "
            f"random window offset, rotation {rot}, at most {args.max_period} window points. "
            f"Seed {args.seed}{' (--quick)' if args.quick else ''}.",
            "z: per parameter against the reference (posteriordb's Stan draws; exact moments "
            "for the Gaussians). ESS: min over parameters of arviz's ESS for the mean (capped "
            "by arviz at N log10 N); ESS (x^2): the same for (x - mean)^2. All chains start at "
            "the reference posterior mean.",
            "",
            header,
            *rows,
            "",
            "Ratios ours / peer from the same run (> 1: OrbitalMCMC is better):",
            "",
            ratio_header,
            *ratios,
            "",
            f"Summary: {summary}.",
            "",
        ]
    )
    print()
    print("\n".join([ratio_header, *ratios, "", summary]))
    default = "bench_orbital_quick.md" if args.quick else "bench_orbital.md"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
