"""ppl.InvolutiveMCMC(involution="hmc") against posteriordb's Stan reference posteriors.

For every parameter of the small posteriors: z of the mean,
(mean - ref_mean) / sqrt(sd^2 / ESS + ref_sd^2 / n_ref), and z of the sd ratio (delta method,
see ``benchmarks.posteriordb.Agreement``), both below 4. The larger posteriors (diamonds,
gp_pois_regr, hmm_example) are in ``benchmarks/posteriordb/bench_posteriordb.py`` and in the
slow test below. Float64 (kilpisjarvi's posterior correlation is about 1 - 1e-8). The target
acceptance is the reference run's ``adapt_delta`` (0.99 for diamonds and gp_pois_regr).
"""

import math

import jax
import numpy as np
import pytest
from numpyro.infer import MCMC, NUTS

from benchmarks.posteriordb import NAMES, SHORT_NAMES, load
from ppl import InvolutiveMCMC
from tests.ppl._posteriordb import check_agreement, run_chains

# posterior -> (num_warmup, num_samples); 2 vectorized chains
SMALL = {
    "arma11": (500, 500),
    "earnings": (500, 500),
    "nes2000": (500, 500),
    "kilpisjarvi": (1000, 500),
}
LARGE = {"diamonds": (1000, 1000), "gp_pois_regr": (1000, 2000), "hmm_example": (500, 1000)}


def run_involutive_hmc(name, num_warmup, num_samples, seed=0):
    post = load(name)

    def kernel():
        return InvolutiveMCMC(
            post.model,
            involution="hmc",
            trajectory_length=math.pi / 2,
            dense_mass=True,
            target_accept_prob=post.adapt_delta,  # as the Stan reference run
        )

    return post, run_chains(kernel, post, num_warmup, num_samples, seed)


@pytest.mark.parametrize("name", list(SMALL))
def test_small_posteriors_agree_with_reference(name):
    post, samples = run_involutive_hmc(name, *SMALL[name])
    check_agreement(post, samples)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LARGE))
def test_large_posteriors_agree_with_reference(name):
    post, samples = run_involutive_hmc(name, *LARGE[name])
    check_agreement(post, samples)


def test_loader_api():
    assert len(NAMES) == 7 and set(SHORT_NAMES.values()) == set(NAMES)
    post = load("earnings")
    assert post is load("earnings-logearn_interaction")  # cached
    assert post.num_params == 5 and post.ndraws == 10_000
    mean, sd, q05, q95 = post.reference["beta[1]"]
    assert q05 < mean < q95 and sd > 0
    draws = post.to_stan_names({"beta": np.zeros((2, 7, 4)), "sigma": np.ones((2, 7))})
    assert set(draws) == {"beta[1]", "beta[2]", "beta[3]", "beta[4]", "sigma"}
    assert draws["beta[4]"].shape == (2, 7)
    with pytest.raises(KeyError, match="site 'sigma'"):
        post.to_stan_names({"beta": np.zeros((2, 7, 4))})
    with pytest.raises(ValueError, match="group_by_chain=True"):
        post.agreement({"beta": np.zeros((7, 4)), "sigma": np.ones(7)})
    with pytest.raises(ValueError, match="Unknown posterior 'eight_schools'"):
        load("eight_schools")


def test_posteriordb_path_error(monkeypatch, tmp_path):
    from benchmarks.posteriordb import posteriordb_path

    monkeypatch.setenv("PPL_POSTERIORDB", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="PPL_POSTERIORDB"):
        posteriordb_path()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_translations_agree_under_nuts(name):
    """The NumPyro translations themselves, checked with numpyro.infer.NUTS."""
    post = load(name)
    with jax.enable_x64(True):
        mcmc = MCMC(
            NUTS(post.model, dense_mass=True, target_accept_prob=post.adapt_delta),
            num_warmup=500,
            num_samples=1000,
            num_chains=2,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.key(1), **post.kwargs)
        samples = jax.tree.map(np.asarray, mcmc.get_samples(group_by_chain=True))
    check_agreement(post, samples)
