"""Shared runner and agreement check for the posteriordb tests."""

import jax
import numpy as np
from numpyro.infer import MCMC


def run_chains(kernel, post, num_warmup, num_samples, seed=0):
    """2 vectorized float64 chains of ``kernel`` (built under x64) on ``post``'s data."""
    with jax.enable_x64(True):
        mcmc = MCMC(
            kernel(),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=2,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.key(seed), **post.kwargs)
        return jax.tree.map(np.asarray, mcmc.get_samples(group_by_chain=True))


def check_agreement(post, samples, min_ess=100):
    """Every parameter: ESS above ``min_ess``, |z| of the mean and of the sd ratio below 4."""
    table = post.agreement(samples)
    assert set(table) == set(post.reference)
    for name, a in table.items():
        assert a.ess > min_ess, (name, a)
        assert abs(a.z_mean) < 4, (name, a)  # z-score
        assert abs(a.z_sd) < 4, (name, a)  # z-score
