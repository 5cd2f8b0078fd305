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
from kernels.flows import ising_log_joint
from ppl.deterministic_gibbs import resample

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
        ppl.DeterministicGibbs(model, output="events"),
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


def test_sequential_chains_init_params_and_resampled_view():
    """Two sequential chains from init_params; the resampled (unweighted) view holds each event
    as often as its time share says (systematic resampling: within one draw)."""
    mcmc = MCMC(
        ppl.DeterministicGibbs(model, speed=1.0, output="events"),
        num_warmup=100,
        num_samples=4000,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(
        jax.random.key(1),
        init_params={"z": jnp.array([[1, 0, 1], [0, 0, 1]]), "c": jnp.array([2, 0])},
        extra_fields=("weight", "num_density_evals"),
    )
    s, f = mcmc.get_samples(), mcmc.get_extra_fields()
    assert s["z"].shape == (8000, 3) and s["c"].shape == (8000,)
    assert np.all(f["num_density_evals"] == 3 * 1 + 2)  # sum(K_i - 1)
    w = np.asarray(f["weight"])
    assert np.all(w > 0)
    view = resample(jax.random.key(2), {**s, "event": jnp.arange(8000)}, w)
    assert view["c"].shape == (8000,)
    # systematic resampling: each event is drawn within one of its expected count
    counts = np.bincount(np.asarray(view["event"]), minlength=8000)
    assert np.all(np.abs(counts - 8000 * w / w.sum()) < 1 + 1e-3)
    np.testing.assert_array_equal(np.asarray(view["c"]), np.asarray(s["c"])[view["event"]])


def test_errors():
    def bad():
        numpyro.sample("x", dist.Normal())

    mcmc = MCMC(ppl.DeterministicGibbs(bad), num_warmup=0, num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="finite support"):
        mcmc.run(jax.random.key(0))
    mcmc = MCMC(ppl.DeterministicGibbs(model), num_warmup=0, num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="outside the support"):
        mcmc.run(jax.random.key(0), init_params={"c": jnp.array(5)})
    with pytest.raises(ValueError, match="has 2 entries"):
        mcmc.run(jax.random.key(0), init_params={"z": jnp.array([1, 0])})
    with pytest.raises(TypeError, match="callable"):
        ppl.DeterministicGibbs("model")
    with pytest.raises(ValueError, match="output"):
        ppl.DeterministicGibbs(model, output="weighted")
    with pytest.raises(ValueError, match="interval"):
        ppl.DeterministicGibbs(model, interval=0.0)
    with pytest.raises(ValueError, match="one-dimensional"):
        resample(jax.random.key(0), {"c": jnp.zeros((2, 3))}, jnp.ones((2, 3)))


ISING_BETA = 0.3


def ising_model():
    x = numpyro.sample("x", dist.Bernoulli(0.5).expand([9]))
    numpyro.factor("ising", ising_log_joint((3, 3), ISING_BETA)(x.astype(jnp.int32)))


def ising_magnetization_law():
    lj = ising_log_joint((3, 3), ISING_BETA)
    states = np.array(list(itertools.product([0, 1], repeat=9)))
    lp = np.asarray(jax.vmap(lj)(jnp.asarray(states)))
    p = np.exp(lp - lp.max())
    m = (2 * states - 1).sum(1)
    return np.array([p[m == v].sum() for v in MAGNETIZATIONS]) / p.sum()


MAGNETIZATIONS = np.arange(-9, 10, 2)


def _magnetization_frequencies(kernel, chains=16, n=300):
    mcmc = MCMC(
        kernel,
        num_warmup=20,
        num_samples=n,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0))
    m = (2 * np.asarray(mcmc.get_samples(group_by_chain=True)["x"]) - 1).sum(-1)
    return np.stack([(m == v).mean(1) for v in MAGNETIZATIONS], 1)  # [chains, 10]


def test_default_samples_are_unbiased_on_ising():
    """3x3 Ising (beta = 0.3): get_samples() as they stand (no weights) against the exact law of
    the magnetization, per value z = (mean over chains - exact) / (sd / sqrt(chains)),
    |z| < 4.5 over 10 values (Bonferroni-ish); seen: max |z| about 2, TV about 0.01. Negative
    control: the events read without their weights (output="events"), the old default, are
    biased: max |z| > 4.5 (seen about 9, TV about 0.05)."""
    law = ising_magnetization_law()
    chains = 16
    for output, biased in (("times", False), ("events", True)):
        freq = _magnetization_frequencies(ppl.DeterministicGibbs(ising_model, output=output))
        z = (freq.mean(0) - law) / (freq.std(0, ddof=1) / np.sqrt(chains) + 1e-12)
        tv = 0.5 * np.abs(freq.mean(0) - law).sum()
        if biased:
            assert np.abs(z).max() > 4.5, (output, tv, z)
        else:
            assert np.abs(z).max() < 4.5, (output, tv, z)  # z-score


def test_observation_times_are_equally_spaced():
    """output="times": weight is the interval; the evaluations match the events crossed."""
    mcmc = MCMC(
        ppl.DeterministicGibbs(model, interval=0.25),
        num_warmup=0,
        num_samples=400,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(3), extra_fields=("weight", "num_density_evals"))
    f = mcmc.get_extra_fields()
    np.testing.assert_allclose(np.asarray(f["weight"]), 0.25)
    evals = np.asarray(f["num_density_evals"])
    assert np.all(evals % 5 == 0) and evals.sum() > 0  # 5 evaluations per event
