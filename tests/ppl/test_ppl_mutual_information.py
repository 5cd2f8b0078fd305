"""ppl.mutual_information on a NumPyro linear-Gaussian model (PPCA / linear VAE):
z ~ N(0, I_3), x | z ~ N(W z, s^2 I_4), I(x; z) = 1/2 log det(I + W W^T / s^2) = 4.55 nats."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import multivariate_normal

import ppl

W = np.array([[2.0, 0.3, -0.5], [0.4, 1.5, 0.2], [-0.3, 0.6, 2.5], [1.0, -1.0, 0.5]])
S = 0.5
C = W @ W.T + S**2 * np.eye(4)
MI = 0.5 * np.linalg.slogdet(np.eye(4) + W @ W.T / S**2)[1]


def model(x=None):
    z = numpyro.sample("z", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    numpyro.sample("x", dist.Normal(jnp.asarray(W) @ z, S).to_event(1), obs=x)


def nuisance_model(x=None):
    z = numpyro.sample("z", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    numpyro.sample("x", dist.Normal(jnp.asarray(W) @ z, s).to_event(1), obs=x)


def se(a):
    return np.std(a, ddof=1) / np.sqrt(np.size(a))


def test_validation_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="data sites"):
        ppl.mutual_information(key, model)
    with pytest.raises(ValueError, match="integrated out"):
        ppl.mutual_information(key, nuisance_model, x=None, latent="z")
    with pytest.raises(ValueError, match="not latent sample sites"):
        ppl.mutual_information(key, model, x=None, latent="w")
    with pytest.raises(ValueError, match="num_runs"):
        ppl.mutual_information(key, model, x=None, num_runs=1)


@functools.cache
def _run(schedule, num_particles):
    with jax.enable_x64(True):
        r = ppl.mutual_information(
            jax.random.key(1),
            model,
            x=None,
            num_particles=num_particles,
            num_runs=64,
            schedule=None if schedule is None else np.asarray(schedule),
        )
    x = np.asarray(r.data["x"], np.float64)
    lpx = multivariate_normal(np.zeros(4), C).logpdf(x)
    return r, lpx


@pytest.mark.slow
def test_mutual_information_brackets_closed_form():
    """K = 4 AIS chains on the pilot's ESS-adaptive schedule (target CESS 0.95): measured lower
    4.0, upper 5.6 (true 4.55) over 64 joint draws."""
    r, lpx = _run(None, 4)
    pmi = np.asarray(r.log_likelihood) - lpx
    d_lo = np.asarray(r.log_marginal_lower) - lpx
    d_up = np.asarray(r.log_marginal_upper) - lpx
    assert d_lo.mean() < 4 * se(d_lo)  # z-score: E[L] <= log p(x)
    assert d_up.mean() > -4 * se(d_up)  # z-score: E[U] >= log p(x)
    assert abs(pmi.mean() - MI) < 4 * se(pmi)  # z-score: the exact log p(x|z) term
    lo, up = np.asarray(r.lower), np.asarray(r.upper)
    assert lo.mean() < MI + 4 * np.hypot(se(lo - pmi), se(pmi))  # z-score
    assert up.mean() > MI - 4 * np.hypot(se(up - pmi), se(pmi))  # z-score
    slack = np.log(2 * lo.size / 0.01)  # distribution-free, alpha = 0.01 (Markov + union)
    assert d_lo.max() <= slack and d_up.min() >= -slack
    assert r.gap.mean() < 3.0  # informative (1.6 measured)
    s = r.summary()
    assert s["lower"][0] == pytest.approx(lo.mean()) and s["num_runs"] == 64


@pytest.mark.slow
def test_one_temperature_is_iwae_and_saturates():
    """schedule [0, 1]: the IWAE bounds with the prior as proposal; the lower bound is at most
    log K = log 16 < I in every run (deterministic), the upper bound above I (z-score)."""
    r, lpx = _run((0.0, 1.0), 16)
    assert np.all(np.asarray(r.lower) <= np.log(16) + 1e-9)
    d_up = np.asarray(r.log_marginal_upper) - lpx
    assert d_up.mean() > -4 * se(d_up)  # z-score
