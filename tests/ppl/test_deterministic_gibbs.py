"""ppl.DeterministicGibbs on a NumPyro model with only discrete latent sites, against enumeration."""

import itertools

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC
from numpyro.infer.util import log_density

import ppl

Y = jnp.array([0.8, -0.3, 1.5])


def model(y=Y):
    z = numpyro.sample("z", dist.Bernoulli(0.4).expand([3]))
    c = numpyro.sample("c", dist.Categorical(jnp.array([0.2, 0.5, 0.3])))
    numpyro.sample("y", dist.Normal(z * (c - 1.0), 1.0), obs=y)


def exact():
    states, logp = [], []
    for zz in itertools.product([0, 1], repeat=3):
        for c in range(3):
            p = {"z": jnp.array(zz), "c": jnp.array(c)}
            logp.append(float(log_density(model, (), {}, p)[0]))
            states.append((np.array(zz), c))
    w = np.exp(np.array(logp) - max(logp))
    w /= w.sum()
    ez = sum(wi * s[0] for wi, s in zip(w, states, strict=True))
    ec = sum(wi * s[1] for wi, s in zip(w, states, strict=True))
    return ez, ec


def test_deterministic_gibbs_matches_enumeration_and_arviz():
    chains, n = 32, 2000
    mcmc = MCMC(
        ppl.DeterministicGibbs(model),
        num_warmup=0,
        num_samples=n,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), extra_fields=("weight",))
    s = mcmc.get_samples(group_by_chain=True)
    w = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["weight"])
    ez, ec = exact()
    est_z = (w[..., None] * np.asarray(s["z"])).sum(1) / w.sum(1)[:, None]
    est_c = (w * np.asarray(s["c"])).sum(1) / w.sum(1)
    z = (est_z.mean(0) - ez) / (est_z.std(0, ddof=1) / np.sqrt(chains))
    assert np.all(np.abs(z) < 4), z  # z-score
    z = (est_c.mean() - ec) / (est_c.std(ddof=1) / np.sqrt(chains))
    assert abs(z) < 4, z  # z-score
    idata = az.from_numpyro(mcmc)
    assert "z" in idata.posterior


def test_continuous_site_error():
    def bad():
        numpyro.sample("x", dist.Normal())

    mcmc = MCMC(ppl.DeterministicGibbs(bad), num_warmup=0, num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="finite support"):
        mcmc.run(jax.random.key(0))
