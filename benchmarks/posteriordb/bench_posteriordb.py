"""ppl.InvolutiveMCMC(involution="hmc") vs numpyro.infer.HMC and NUTS on posteriordb.

For each posterior (float64, dense mass matrix, vectorized chains):

* ``InvolutiveMCMC``: involutive HMC with fixed trajectory length ``T`` (default pi/2), its own
  warmup (NumPyro's dual averaging toward the reference run's ``adapt_delta`` and windowed dense
  mass matrix);
* ``numpyro HMC (own warmup)``: ``numpyro.infer.HMC`` with the same trajectory length, target
  acceptance and dense mass matrix, and its own warmup: compares the warmups (adapted step size)
  and the samplers end to end;
* ``numpyro HMC (same tuning)``: ``numpyro.infer.HMC`` started from the warm positions, step
  size and inverse mass matrix of ``InvolutiveMCMC`` (adaptation off, 20 warmup steps): the same
  Markov chain, so ESS per gradient should agree and the time per gradient compares the
  implementations;
* ``NUTS``: ``numpyro.infer.NUTS`` with its own warmup (same target acceptance).

Columns: max |z| of the means and of the sd ratios over parameters against the Stan reference
(``benchmarks.posteriordb.Posterior.agreement``), adapted step size (mean over chains), min ESS
of the mean over parameters, gradient
evaluations of the sampling phase, ESS per 1000 gradients, ESS per second of the sampling phase
(best of three calls of one jitted scan of ``kernel.sample``, after a first call that
compiles), compile time of that scan (first call minus a timed call), and warmup time
(``MCMC.warmup``, compilation included).

    python benchmarks/posteriordb/bench_posteriordb.py [--quick] [--names arma11 earnings]
"""

import argparse
import datetime
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.infer import HMC, MCMC, NUTS, init_to_value  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

from benchmarks.posteriordb import NAMES, SHORT_NAMES, load  # noqa: E402
from ppl import InvolutiveMCMC  # noqa: E402

QUICK = ("arma11", "earnings", "nes2000", "kilpisjarvi")


def reference_means(post):
    """The reference posterior means as a dict of site values (``beta[2]`` -> ``beta[1]``)."""
    sites = {}
    for name, (mean, *_) in post.reference.items():
        site, _, index = name.partition("[")
        sites.setdefault(site, {})[int(index[:-1]) - 1 if index else None] = mean
    return {
        site: np.asarray(v[None] if None in v else [v[i] for i in range(len(v))], np.float64)
        for site, v in sites.items()
    }


def initial_positions(post, num_chains, seed):
    """Unconstrained initial positions, one per chain, shared by every sampler: the reference
    posterior mean (``init_to_value``), so that efficiency is measured inside the main mode
    (from random starts either NUTS sometimes leaves a chain in arma11's non-invertible MA
    region, |theta| > 1, with a step size collapsed to 1e-30). Also returns NumPyro's potential
    and postprocess functions."""
    inits = []
    for key in jax.random.split(jax.random.key(seed + 1000), num_chains):
        params, potential_fn, postprocess, _ = initialize_model(
            key,
            post.model,
            model_kwargs=post.kwargs,
            dynamic_args=False,
            init_strategy=init_to_value(values=reference_means(post)),
        )
        inits.append(params.z)
    return jax.tree.map(lambda *x: jnp.stack(x), *inits), potential_fn, postprocess


def _block(tree):
    return jax.block_until_ready(tree)


def measure(post, kernel, num_warmup, num_samples, num_chains, seed, init_params=None):
    """NumPyro's warmup, then the sampling phase as one jitted scan of ``kernel.sample``.

    The scan is run four times from the same warm state: the first call compiles, the best of
    the other three is timed (``MCMC.run`` recompiles at every call, so it cannot time sampling alone).
    """
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.warmup(jax.random.key(seed), **post.kwargs, init_params=init_params, collect_warmup=False)
    warm = _block(mcmc.post_warmup_state)
    warmup_s = time.perf_counter() - start
    sampler = mcmc.sampler

    @jax.jit
    def sample_phase(state):
        def body(state, _):
            state = sampler.sample(state, (), post.kwargs)
            return state, (state.z, state.num_steps)

        return jax.lax.scan(body, state, None, length=num_samples)[1]

    times = []
    for _ in range(4):  # the first call compiles; the best of the next three is reported
        start = time.perf_counter()
        zs, num_steps = _block(sample_phase(warm))
        times.append(time.perf_counter() - start)
    times = [times[0], min(times[1:])]
    constrain = jax.vmap(jax.vmap(sampler.postprocess_fn((), post.kwargs)))
    samples = jax.tree.map(lambda x: np.swapaxes(np.asarray(x), 0, 1), constrain(zs))
    grads = int(np.sum(np.asarray(num_steps, np.int64)))
    table = post.agreement(samples)
    ess = min(a.ess for a in table.values())
    return {
        "z_mean": max(abs(a.z_mean) for a in table.values()),
        "z_sd": max(abs(a.z_sd) for a in table.values()),
        "step_size": float(np.mean(np.asarray(warm.adapt_state.step_size))),
        "ess": ess,
        "grads": grads,
        "ess_per_kgrad": 1000.0 * ess / grads,
        "ess_per_s": ess / times[1],
        "sample_s": times[1],
        "compile_s": max(times[0] - times[1], 0.0),
        "warmup_s": warmup_s,
        "state": warm,
    }


def bench_one(name, args):
    post = load(name)
    T = args.trajectory_length
    results = {}
    with jax.enable_x64(True):
        z0 = initial_positions(post, args.num_chains, args.seed)[0]
        ours = InvolutiveMCMC(
            post.model,
            involution="hmc",
            trajectory_length=T,
            dense_mass=True,
            target_accept_prob=post.adapt_delta,
        )
        results["InvolutiveMCMC (hmc)"] = measure(
            post, ours, args.num_warmup, args.num_samples, args.num_chains, args.seed, z0
        )
        results["numpyro HMC (own warmup)"] = measure(
            post,
            HMC(
                post.model,
                dense_mass=True,
                trajectory_length=T,
                target_accept_prob=post.adapt_delta,
            ),
            args.num_warmup,
            args.num_samples,
            args.num_chains,
            args.seed,
            z0,
        )
        warm = results["InvolutiveMCMC (hmc)"]["state"].adapt_state
        # one chain's tuning for every chain (numpyro's HMC takes one step size / mass matrix)
        step_size = float(np.asarray(warm.step_size)[0])
        inverse_mass_matrix = {k: np.asarray(v)[0] for k, v in warm.inverse_mass_matrix.items()}
        peer = HMC(
            post.model,
            step_size=step_size,
            inverse_mass_matrix=inverse_mass_matrix,
            adapt_step_size=False,
            adapt_mass_matrix=False,
            dense_mass=True,
            trajectory_length=T,
        )
        results["numpyro HMC (same tuning)"] = measure(
            post,
            peer,
            20,
            args.num_samples,
            args.num_chains,
            args.seed,
            init_params=results["InvolutiveMCMC (hmc)"]["state"].z,  # warm positions
        )
        results["numpyro NUTS"] = measure(
            post,
            NUTS(post.model, dense_mass=True, target_accept_prob=post.adapt_delta),
            args.num_warmup,
            args.num_samples,
            args.num_chains,
            args.seed,
            z0,
        )
    return post, results


RATIO_HEADER = (
    "| posterior | peer | ESS/grad ours / peer | ESS/s ours / peer | time per grad ours / peer |\n"
    "| --- | --- | ---: | ---: | ---: |"
)


def write(args, header, rows, ratios):
    """Write the results file (after every posterior, so a long run keeps what it measured)."""
    text = "\n".join(
        [
            "# posteriordb: InvolutiveMCMC(hmc) vs numpyro HMC and NUTS",
            "",
            f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Machine: "
            f"{platform.platform()}, {platform.processor() or platform.machine()}, "
            f"JAX {jax.__version__} on {jax.default_backend()}.",
            f"Settings: {args.num_chains} vectorized chains, {args.num_warmup} warmup, "
            f"{args.num_samples} draws per chain, float64, dense mass matrix, trajectory length "
            f"{args.trajectory_length:.3f} (HMC), seed {args.seed}"
            f"{' (--quick)' if args.quick else ''}.",
            "z: per parameter against posteriordb's Stan reference (mean: / sqrt(sd^2/ESS + "
            "ref_sd^2/n_ref); sd ratio: delta method; agreement is |z| < 4); ESS: min over "
            "parameters of the ESS of the mean (arviz). Target acceptance: the reference run's "
            "adapt_delta (0.99 for diamonds and gp_pois_regr, else 0.8). numpyro HMC runs with "
            "InvolutiveMCMC's adapted step size and mass matrix (chain 0's). All chains of all "
            "samplers start at the reference posterior mean (from random starts NumPyro's HMC "
            "with its own warmup can leave a chain in arma11's non-invertible MA region with a "
            "collapsed step size, and a fixed trajectory length then means T / eps leapfrog "
            "steps per iteration).",
            "",
            header,
            *rows,
            "",
            "Ratios (from the same run; > 1 means ours is better for ESS, slower for time per grad):",
            "",
            RATIO_HEADER,
            *ratios,
            "",
        ]
    )

    out = ROOT / "benchmarks" / "results" / "bench_posteriordb.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="the four small posteriors, fewer draws"
    )
    parser.add_argument("--names", nargs="*", help="posterior names (short or full)")
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--trajectory-length", type=float, default=math.pi / 2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.num_warmup, args.num_samples, args.num_chains = 1000, 500, 2
    names = args.names or (QUICK if args.quick else tuple(SHORT_NAMES))
    names = [SHORT_NAMES.get(n, n) for n in names]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown posteriors {unknown}; choose from {list(SHORT_NAMES)}")

    header = (
        "| posterior | sampler | max abs z mean | max abs z sd | step size | min ESS | grads "
        "| ESS / 1000 grads | ESS / s | sampling s | compile s | warmup s |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rows, ratios = [], []
    for name in names:
        post, res = bench_one(name, args)
        for sampler, r in res.items():
            rows.append(
                f"| {name} ({post.num_params}) | {sampler} | {r['z_mean']:.2f} | {r['z_sd']:.2f} "
                f"| {r['step_size']:.3g} | {r['ess']:.0f} | {r['grads']} | {r['ess_per_kgrad']:.1f} | {r['ess_per_s']:.0f} "
                f"| {r['sample_s']:.2f} | {r['compile_s']:.2f} | {r['warmup_s']:.1f} |"
            )
            print(rows[-1], flush=True)
        ours = res["InvolutiveMCMC (hmc)"]
        for peer in ("numpyro HMC (own warmup)", "numpyro HMC (same tuning)", "numpyro NUTS"):
            p = res[peer]
            ratios.append(
                f"| {name} | {peer} | {ours['ess_per_kgrad'] / p['ess_per_kgrad']:.2f} "
                f"| {ours['ess_per_s'] / p['ess_per_s']:.2f} "
                f"| {(ours['sample_s'] / ours['grads']) / (p['sample_s'] / p['grads']):.2f} |"
            )
        write(args, header, rows, ratios)
    print()
    print("\n".join([RATIO_HEADER, *ratios]))
    print(f"\nwrote {write(args, header, rows, ratios)}")


if __name__ == "__main__":
    main()
