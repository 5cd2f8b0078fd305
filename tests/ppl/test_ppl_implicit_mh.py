"""ppl.ImplicitMH: guide / Predictive proposals refined toward target samples."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.stats import norm
from numpyro.infer import Predictive

from kernels import implicit_mh as imh
from ppl import ImplicitMH

TARGET_MEAN, TARGET_SD = 2.0, 0.7


def _prior_model():
    numpyro.sample("mu", dist.Normal(0.0, 2.0))


def _guide():
    loc = numpyro.param("loc", 0.0)
    numpyro.sample("mu", dist.Normal(loc, 2.0))


def _target(n=3000):
    return {"mu": TARGET_MEAN + TARGET_SD * np.random.default_rng(0).standard_normal(n)}


def test_predictive_proposal_moves_toward_target():
    mh = ImplicitMH(Predictive(_prior_model, num_samples=1), _target())
    fit = mh.fit(jax.random.key(0), num_steps=800)
    res = mh.run(jax.random.key(1), num_chains=800, num_steps=40)
    mu = np.asarray(res.samples["mu"])
    assert mu.shape == (800,)
    # independent chains: z-score of the mean against the target mean.
    z = (mu.mean() - TARGET_MEAN) / (mu.std() / np.sqrt(len(mu)))
    assert abs(z) < 4  # z-score
    assert float(fit.tv_bound) == 1.0  # target known by samples only: L(d*) unknown, vacuous


def test_tv_bound_with_exact_reference():
    """Synthetic check through ppl: with the exact ratio as reference the bound is informative
    and above the TV between the target and the chain's stationary law q e^r / Z (1-d grid)."""
    mh = ImplicitMH(Predictive(_prior_model, num_samples=1), _target(20000))

    def exact(z):  # z: the flattened sites, here (mu,)
        return norm.logpdf(z[0], TARGET_MEAN, TARGET_SD) - norm.logpdf(z[0], 0.0, 2.0)

    fit = mh.fit(jax.random.key(5), num_steps=3000, exact_log_ratio=exact)
    grid = np.linspace(-8.0, 10.0, 4001)[:, None]
    log_q = norm.logpdf(grid[:, 0], 0.0, 2.0)
    t_inf = np.exp(np.asarray(log_q + jax.vmap(fit.log_ratio)(jnp.asarray(grid))))
    p = np.exp(np.asarray(norm.logpdf(grid[:, 0], TARGET_MEAN, TARGET_SD)))
    tv = 0.5 * np.abs(t_inf / t_inf.sum() - p / p.sum()).sum()
    assert tv <= float(fit.tv_bound) < 1.0, (tv, fit)


def test_guide_proposal_energy_distance_improves():
    mh = ImplicitMH(_guide, _target(), params={"loc": jnp.array(-1.0)})
    mh.fit(jax.random.key(2), num_steps=800)
    res = mh.run(jax.random.key(3), num_chains=600, num_steps=40)
    fresh = jnp.asarray(_target(600)["mu"])[:, None]
    prop = jax.vmap(mh.sample_proposal)(jax.random.split(jax.random.key(4), 600))
    before = imh.energy_distance(prop, fresh)
    after = imh.energy_distance(res.samples["mu"][:, None], fresh)
    assert float(after) < 0.2 * float(before)


def test_errors():
    with pytest.raises(ValueError, match="non-empty"):
        ImplicitMH(Predictive(_prior_model, num_samples=1), {})
    with pytest.raises(ValueError, match="does not produce"):
        ImplicitMH(Predictive(_prior_model, num_samples=1), {"sigma": np.ones(10)})
    with pytest.raises(RuntimeError, match="fit"):
        ImplicitMH(Predictive(_prior_model, num_samples=1), _target()).run(jax.random.key(0))


@pytest.mark.slow
def test_example_runs(capsys):
    import runpy
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / "implicit_mh_refine.py"
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("energy distance to target"))
    closer = float(line.split("(")[1].split("x closer")[0])
    assert closer > 10, line  # the refined chain is far closer to the target than the guide
