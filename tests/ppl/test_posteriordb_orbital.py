"""ppl.OrbitalMCMC against posteriordb's Stan reference posteriors.

For every parameter: z of the mean, (mean - ref_mean) / sqrt(sd^2 / ESS + ref_sd^2 / n_ref), and
z of the sd ratio (delta method), both below 4 (``benchmarks.posteriordb.Posterior.agreement``).
Float64, dense mass matrix, target acceptance = the reference run's ``adapt_delta``, 2
vectorized chains from NumPyro's ``init_to_median``. The fast posteriors run by default; the
others are marked slow. kilpisjarvi needs windows longer than the default ``max_period`` (its
adapted metric leaves a condition number near 1e4: about 400 leapfrog steps of T = 4), so it
runs with ``max_period=512``; even so its ESS stays below 100 (a strict xfail, a known problem).
"""

import pytest
from numpyro.infer import init_to_median

from benchmarks.posteriordb import load
from ppl import OrbitalMCMC
from tests.ppl._posteriordb import check_agreement, run_chains

# posterior -> (num_warmup, num_samples, extra OrbitalMCMC arguments)
FAST = {"arma11": (500, 500, {}), "nes2000": (500, 500, {})}
SLOW = {
    "earnings": (500, 500, {}),
    "kilpisjarvi": (1000, 1000, {"max_period": 512}),
    "diamonds": (1000, 1000, {}),
    "gp_pois_regr": (1000, 1000, {}),
    "hmm_example": (500, 1000, {}),
}


def run_orbital(name, num_warmup, num_samples, kwargs, seed=0):
    post = load(name)

    def kernel():
        return OrbitalMCMC(
            post.model,
            dense_mass=True,
            target_accept_prob=getattr(post, "adapt_delta", 0.8),
            init_strategy=init_to_median(num_samples=15),
            **kwargs,
        )

    return post, run_chains(kernel, post, num_warmup, num_samples, seed)


@pytest.mark.parametrize("name", list(FAST))
def test_fast_posteriors_agree_with_reference(name):
    check_agreement(*run_orbital(name, *FAST[name]))


KNOWN_POOR_MIXING = pytest.mark.xfail(
    strict=True,
    reason="kilpisjarvi: orbital HMC with a window fixed in time mixes poorly on this posterior "
    "(means and sds agree, |z| < 1, but min ESS is 38 < 100 in 2 x 1000 draws at max_period=512; "
    "see docs/orbital.md). Strict: the test reports when it starts passing.",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=KNOWN_POOR_MIXING) if n == "kilpisjarvi" else n for n in SLOW]
)
def test_slow_posteriors_agree_with_reference(name):
    check_agreement(*run_orbital(name, *SLOW[name]))
