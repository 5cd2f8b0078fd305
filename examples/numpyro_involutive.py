"""Eight schools with involutive HMC in NumPyro, summarised with arviz.

The non-centred eight-schools model (Rubin 1981; Gelman et al., BDA3 Sec. 5.5) sampled by
``ppl.InvolutiveMCMC`` (involutive HMC: leapfrog then momentum flip, accepted with the
involutive Metropolis-Hastings ratio) inside ``numpyro.infer.MCMC``, with NumPyro's warmup
(dual averaging, diagonal mass matrix) and 4 vectorized chains; then the same model with the
irreversible MALA involution.

    python examples/numpyro_involutive.py [--quick]
"""

import argparse
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

from ppl import InvolutiveMCMC

Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    """Non-centred eight schools: theta_j = mu + tau * eta_j, y_j ~ N(theta_j, sigma_j)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def run(involution: str, num_warmup: int, num_samples: int, seed: int = 0, **kwargs):
    """Sample eight schools with ``InvolutiveMCMC(involution=...)``; returns the MCMC object."""
    kernel = InvolutiveMCMC(eight_schools, involution=involution, **kwargs)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), SIGMA, y=Y, extra_fields=("accept_prob", "num_steps"))
    return mcmc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer draws")
    args = parser.parse_args(argv)
    num_warmup, num_samples = (300, 300) if args.quick else (1000, 1000)
    results = {}
    for involution, kwargs in (("hmc", {"trajectory_length": 1.5}), ("irreversible_mala", {})):
        start = time.perf_counter()
        mcmc = run(involution, num_warmup, num_samples, **kwargs)
        fields = mcmc.get_extra_fields()
        idata = az.from_numpyro(mcmc)
        summary = az.summary(idata, var_names=["mu", "tau", "theta"])
        print(f"\n== InvolutiveMCMC(involution={involution!r}) ==")
        print(summary.to_string())
        print(
            f"mean acceptance {float(fields['accept_prob'].mean()):.2f}, "
            f"{int(fields['num_steps'].sum())} gradient evaluations, "
            f"{time.perf_counter() - start:.1f} s (compilation included)"
        )
        results[involution] = summary
    return results


if __name__ == "__main__":
    main()
