r"""Seven posteriordb posteriors as NumPyro models, with Stan's reference summaries.

The data and the reference summaries are read from ``shared/posteriordb/`` beside the repository
(``<repo>/../shared/posteriordb``; override with the environment variable
``PPL_POSTERIORDB``). Each model is a faithful translation of the Stan program
``posterior_database/models/stan/<model>.stan`` of stan-dev/posteriordb, Stan's implicit flat
priors (``ImproperUniform``) and constraints (``<lower=0>``, ``simplex``,
``positive_ordered``) included; parameter sites carry Stan's names.

API::

    from benchmarks.posteriordb import load, NAMES

    post = load("earnings-logearn_interaction")     # or the short name "earnings"
    mcmc = MCMC(NUTS(post.model), num_warmup=500, num_samples=1000, num_chains=4)
    mcmc.run(jax.random.key(0), **post.kwargs)
    draws = post.to_stan_names(mcmc.get_samples(group_by_chain=True))  # {"beta[1]": (4, 1000)}
    table = post.agreement(mcmc.get_samples(group_by_chain=True))      # per-parameter z-scores
    assert max(abs(a.z_mean) for a in table.values()) < 4              # z-score

* :data:`NAMES`: the seven posterior names (``"<data>-<model>"``); :data:`SHORT_NAMES` maps a
  short name (``"arma11"``, ``"earnings"``, ``"nes2000"``, ``"diamonds"``, ``"kilpisjarvi"``,
  ``"gp_pois_regr"``, ``"hmm_example"``) to the full one.
* :func:`load` returns a :class:`Posterior`: ``model`` (called as ``model(**kwargs)``),
  ``kwargs`` (the data as NumPy arrays, integers kept integer), ``reference``
  (``{stan_name: (mean, sd, q05, q95)}``), ``ndraws`` (reference draws), ``data`` (the raw
  JSON), ``adapt_delta`` (the reference run's target acceptance, :data:`ADAPT_DELTA`),
  :meth:`Posterior.to_stan_names` and :meth:`Posterior.agreement`.

Run the models in float64 (``with jax.enable_x64(True):``): kilpisjarvi's posterior
correlation is about $1 - 10^{-8}$ (``x`` is about 4000), beyond float32.
"""

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

__all__ = [
    "ADAPT_DELTA",
    "NAMES",
    "SHORT_NAMES",
    "MODELS",
    "Posterior",
    "Agreement",
    "load",
    "posteriordb_path",
    "arma11",
    "logearn_interaction",
    "nes",
    "diamonds",
    "kilpisjarvi",
    "gp_pois_regr",
    "hmm_example",
]


# ------------------------------------------------------------------------------- models
def _flat(shape=()):
    """Stan's implicit flat prior on an unconstrained parameter."""
    return dist.ImproperUniform(constraints.real, (), shape)


def _flat_positive():
    """Stan's implicit flat prior on ``real<lower=0>``."""
    return dist.ImproperUniform(constraints.positive, (), ())


def arma11(T, y):
    """ARMA(1, 1) (``arma11.stan``): $\\nu_t = \\mu + \\phi y_{t-1} + \\theta e_{t-1}$,
    $e_t = y_t - \\nu_t \\sim N(0, \\sigma)$, $e_0 = 0$, $\\nu_1 = \\mu + \\phi\\mu$.

    Args:
        T: number of observations (unused: taken from ``y``).
        y: ``(T,)`` observations.
    """
    del T
    y = jnp.asarray(y)
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))  # cauchy(0, 2.5) on <lower=0>

    def step(err_prev, inputs):
        y_prev, y_t = inputs
        err = y_t - (mu + phi * y_prev + theta * err_prev)
        return err, err

    err1 = y[0] - (mu + phi * mu)
    _, errs = jax.lax.scan(step, err1, (y[:-1], y[1:]))
    err = jnp.concatenate([err1[None], errs])
    numpyro.sample("err", dist.Normal(0.0, sigma), obs=err)


def logearn_interaction(N, earn, height, male):
    """Log earnings on height, sex and their interaction (``logearn_interaction.stan``):
    flat priors on ``beta`` (4) and ``sigma > 0``.

    Args:
        N: number of observations (unused).
        earn, height, male: ``(N,)`` data.
    """
    del N
    earn, height, male = (
        jnp.asarray(a, dtype=jnp.result_type(float)) for a in (earn, height, male)
    )
    beta = numpyro.sample("beta", _flat((4,)))
    sigma = numpyro.sample("sigma", _flat_positive())
    mean = beta[0] + beta[1] * height + beta[2] * male + beta[3] * height * male
    numpyro.sample("log_earn", dist.Normal(mean, sigma), obs=jnp.log(earn))


def nes(N, partyid7, real_ideo, race_adj, educ1, gender, income, age_discrete, year=None):
    """Party identification regression (``nes.stan``): flat priors on ``beta`` (9) and
    ``sigma > 0``; age as three indicators of ``age_discrete`` (2, 3, 4).

    Args:
        N: number of observations (unused).
        partyid7, real_ideo, race_adj, educ1, gender, income, age_discrete: ``(N,)`` data.
        year: unused by the Stan program.
    """
    del N, year
    f = jnp.result_type(float)
    partyid7, real_ideo, race_adj, educ1, gender, income = (
        jnp.asarray(a, dtype=f) for a in (partyid7, real_ideo, race_adj, educ1, gender, income)
    )
    age = jnp.asarray(age_discrete)
    age30_44, age45_64, age65up = ((age == k).astype(f) for k in (2, 3, 4))
    beta = numpyro.sample("beta", _flat((9,)))
    sigma = numpyro.sample("sigma", _flat_positive())
    mean = (
        beta[0]
        + beta[1] * real_ideo
        + beta[2] * race_adj
        + beta[3] * age30_44
        + beta[4] * age45_64
        + beta[5] * age65up
        + beta[6] * educ1
        + beta[7] * gender
        + beta[8] * income
    )
    numpyro.sample("partyid7", dist.Normal(mean, sigma), obs=partyid7)


def diamonds(N, Y, K, X, prior_only):
    """brms Gaussian regression with centred predictors (``diamonds.stan``): ``b ~ N(0, 1)``
    (24), ``Intercept ~ student_t(3, 8, 10)``, ``sigma ~ student_t(3, 0, 10)`` truncated to
    ``sigma > 0``; $Y \\sim N(\\text{Intercept} + X_c b, \\sigma)$.

    Args:
        N: number of observations (unused).
        Y: ``(N,)`` response.
        K: number of columns of ``X`` (unused).
        X: ``(N, K)`` design matrix, first column the intercept.
        prior_only: skip the likelihood when nonzero.
    """
    del N, K
    X = jnp.asarray(X, dtype=jnp.result_type(float))
    Xc = X[:, 1:] - X[:, 1:].mean(axis=0)
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([Xc.shape[1]]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", _flat_positive())
    # student_t(3, 0, 10) on sigma > 0, normalised by its ccdf at 0 (a constant, log 2)
    numpyro.factor("sigma_prior", dist.StudentT(3.0, 0.0, 10.0).log_prob(sigma) + math.log(2.0))
    if not int(prior_only):
        numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=jnp.asarray(Y))


def kilpisjarvi(N, x, y, xpred, pmualpha, psalpha, pmubeta, psbeta):
    """Linear trend with normal priors and a flat ``sigma > 0`` (``kilpisjarvi.stan``).

    Args:
        N: number of observations (unused).
        x, y: ``(N,)`` data.
        xpred: prediction input (unused by the model block).
        pmualpha, psalpha, pmubeta, psbeta: prior means and scales of ``alpha`` and ``beta``.
    """
    del N, xpred
    f = jnp.result_type(float)
    x, y = jnp.asarray(x, dtype=f), jnp.asarray(y, dtype=f)
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", _flat_positive())
    numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def gp_pois_regr(N, x, k, y=None):
    """Latent GP Poisson regression, non-centred (``gp_pois_regr.stan``):
    ``rho ~ gamma(25, 4)``, ``alpha ~ normal(0, 2)`` on ``alpha > 0``,
    ``f = cholesky(alpha^2 exp(-|x_i - x_j|^2 / (2 rho^2)) + 1e-10 I) f_tilde``,
    ``f_tilde ~ N(0, 1)``, ``k ~ poisson_log(f)``.

    Args:
        N: number of points (unused).
        x: ``(N,)`` inputs.
        k: ``(N,)`` counts.
        y: unused by the Stan program.
    """
    del N, y
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([x.shape[0]]).to_event(1))
    sq = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-sq / (2.0 * rho**2)) + 1e-10 * jnp.eye(x.shape[0])
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    numpyro.sample("k", dist.Poisson(jnp.exp(f)), obs=jnp.asarray(k))


def hmm_example(N, K, y):
    """Two-state Gaussian HMM with the states marginalised by the forward algorithm
    (``hmm_example.stan``): rows ``theta1``, ``theta2`` of the transition matrix uniform on the
    simplex, ``mu`` positive ordered with ``mu[1] ~ N(3, 1)``, ``mu[2] ~ N(10, 1)``, unit
    emission scale, no initial-state term (as the Stan program).

    Args:
        N: number of observations (unused).
        K: number of states (2).
        y: ``(N,)`` observations.
    """
    del N
    K = int(K)
    y = jnp.asarray(y, dtype=jnp.result_type(float))
    theta1 = numpyro.sample("theta1", dist.Dirichlet(jnp.ones(K)))  # flat on the simplex
    theta2 = numpyro.sample("theta2", dist.Dirichlet(jnp.ones(K)))
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
    numpyro.factor("mu_prior", dist.Normal(jnp.array([3.0, 10.0]), 1.0).log_prob(mu).sum())
    log_theta = jnp.log(jnp.stack([theta1, theta2]))  # [j, k]: from j to k
    emit = dist.Normal(mu, 1.0).log_prob(y[:, None])  # (N, K)

    def forward(gamma, e):
        gamma = logsumexp(gamma[:, None] + log_theta, axis=0) + e
        return gamma, None

    gamma, _ = jax.lax.scan(forward, emit[0], emit[1:])
    numpyro.factor("y", logsumexp(gamma))


# --------------------------------------------------------------------------- registry
MODELS: dict[str, Callable] = {
    "arma-arma11": arma11,
    "earnings-logearn_interaction": logearn_interaction,
    "nes2000-nes": nes,
    "diamonds-diamonds": diamonds,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    "gp_pois_regr-gp_pois_regr": gp_pois_regr,
    "hmm_example-hmm_example": hmm_example,
}
"""Posterior name -> NumPyro model."""

NAMES: tuple[str, ...] = tuple(MODELS)
"""The seven posterior names."""

ADAPT_DELTA: dict[str, float] = {
    "arma-arma11": 0.8,
    "earnings-logearn_interaction": 0.8,
    "nes2000-nes": 0.8,
    "diamonds-diamonds": 0.99,
    "kilpisjarvi_mod-kilpisjarvi": 0.8,
    "gp_pois_regr-gp_pois_regr": 0.99,
    "hmm_example-hmm_example": 0.8,
}
"""Target acceptance (Stan's ``adapt_delta``) of each reference run, from posteriordb's
``reference_posteriors/draws/info/<posterior>.info.json``; samplers compared with the reference
use it as ``target_accept_prob`` (0.99 for diamonds and gp_pois_regr, whose funnel-like tails a
larger step size under-explores)."""

SHORT_NAMES: dict[str, str] = {
    "arma11": "arma-arma11",
    "earnings": "earnings-logearn_interaction",
    "nes2000": "nes2000-nes",
    "diamonds": "diamonds-diamonds",
    "kilpisjarvi": "kilpisjarvi_mod-kilpisjarvi",
    "gp_pois_regr": "gp_pois_regr-gp_pois_regr",
    "hmm_example": "hmm_example-hmm_example",
}
"""Short name -> posterior name."""

_REPO_ROOT = Path(__file__).resolve().parents[2]


def posteriordb_path() -> Path:
    """The folder holding the posteriors: ``$PPL_POSTERIORDB`` or ``<repo>/../shared/posteriordb``.

    Returns:
        The path (raises FileNotFoundError with the fix when it does not exist).
    """
    env = os.environ.get("PPL_POSTERIORDB")
    path = Path(env) if env else _REPO_ROOT.parent / "shared" / "posteriordb"
    if not path.is_dir():
        raise FileNotFoundError(
            f"posteriordb data not found at {path}. Place the shared/ folder beside the "
            "repository (shared/posteriordb/<posterior>/data.json, reference.json) or set "
            "PPL_POSTERIORDB to its path."
        )
    return path


class Agreement(NamedTuple):
    """Agreement of one parameter with the reference.

    Attributes:
        mean: sample mean.
        sd: sample standard deviation.
        ess: effective sample size of the mean (``arviz.ess(method="mean")``).
        z_mean: $(\\bar x - m_{ref}) / \\sqrt{s^2/\\mathrm{ESS} + s_{ref}^2/n_{ref}}$.
        z_sd: $(s/s_{ref} - 1) / \\mathrm{se}$, with the delta-method standard error of
            $s/s_{ref}$ from the ESS of $(x - \\bar x)^2$ and the reference's draws.
    """

    mean: float
    sd: float
    ess: float
    z_mean: float
    z_sd: float


def _ess(x: np.ndarray) -> float:
    """ESS for the mean of draws of shape (chains, draws) (arviz, ``method="mean"``).

    arviz's estimator stays positive and bounded for antithetic chains (HMC with an integration
    time near a half period gives negative lag-1 correlations), where
    ``numpyro.diagnostics.effective_sample_size`` can return negative values.
    """
    return float(az.ess(np.asarray(x, dtype=np.float64), method="mean"))


@dataclass(frozen=True)
class Posterior:
    """A posteriordb posterior: NumPyro model, data and Stan's reference summaries.

    Attributes:
        name: posterior name (``"<data>-<model>"``).
        model: NumPyro model, called as ``model(**kwargs)``.
        kwargs: model keyword arguments (the data as NumPy arrays / Python scalars).
        reference: ``{stan_name: (mean, sd, q05, q95)}``.
        ndraws: number of reference draws.
        data: the raw ``data.json``.
        adapt_delta: the reference run's target acceptance (:data:`ADAPT_DELTA`).
    """

    name: str
    model: Callable
    kwargs: Mapping
    reference: Mapping[str, tuple[float, float, float, float]]
    ndraws: int
    data: Mapping = field(repr=False)
    adapt_delta: float = 0.8

    @property
    def num_params(self) -> int:
        """Number of scalar parameters in the reference."""
        return len(self.reference)

    def to_stan_names(self, samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Split NumPyro samples into Stan's scalar names (``beta[1]``, 1-based).

        Args:
            samples: ``{site: array}`` with any leading batch dims (``(draws,)`` or
                ``(chains, draws)``) then the site's shape (scalar or vector).

        Returns:
            ``{stan_name: array of the batch shape}`` for every reference parameter (KeyError
            names a missing site).
        """
        out = {}
        for stan_name in self.reference:
            site, _, index = stan_name.partition("[")
            if site not in samples:
                raise KeyError(
                    f"{self.name}: site {site!r} (for {stan_name}) is not in the samples; "
                    f"got {sorted(samples)}."
                )
            value = np.asarray(samples[site])
            out[stan_name] = value[..., int(index[:-1]) - 1] if index else value
        return out

    def agreement(self, samples_by_chain: Mapping[str, np.ndarray]) -> dict[str, Agreement]:
        """Per-parameter agreement with the reference (z-scores use the draws' ESS).

        Args:
            samples_by_chain: ``mcmc.get_samples(group_by_chain=True)``: ``(chains, draws,
                ...)`` per site.

        Returns:
            ``{stan_name: Agreement}``.
        """
        out = {}
        for name, x in self.to_stan_names(samples_by_chain).items():
            x = np.asarray(x, dtype=np.float64)
            if x.ndim != 2:
                raise ValueError(
                    f"agreement needs draws grouped by chain, (chains, draws); {name} has shape "
                    f"{x.shape}. Use mcmc.get_samples(group_by_chain=True)."
                )
            ref_mean, ref_sd = self.reference[name][:2]
            mean, sd = float(x.mean()), float(x.std(ddof=1))
            ess = _ess(x)
            sq = (x - mean) ** 2
            ess_sq = _ess(sq)
            # delta method: se(s)/s = sd((x-m)^2) / (2 s^2 sqrt(ESS_sq))
            rel_se_sd = float(sq.std()) / (2.0 * sd**2 * math.sqrt(ess_sq))
            z_mean = (mean - ref_mean) / math.sqrt(sd**2 / ess + ref_sd**2 / self.ndraws)
            z_sd = (sd / ref_sd - 1.0) / math.sqrt(rel_se_sd**2 + 0.5 / self.ndraws)
            out[name] = Agreement(mean, sd, ess, z_mean, z_sd)
        return out


def _as_array(value):
    if isinstance(value, list):
        arr = np.asarray(value)
        return arr.astype(np.float64) if arr.dtype.kind == "f" else arr
    return value


def load(name: str) -> Posterior:
    """Load a posterior by name (full ``"<data>-<model>"`` or short, see :data:`SHORT_NAMES`).

    Args:
        name: posterior name.

    Returns:
        The :class:`Posterior`.
    """
    full = SHORT_NAMES.get(name, name)
    if full not in MODELS:
        raise ValueError(
            f"Unknown posterior {name!r}; available: {', '.join(NAMES)} "
            f"(short names: {', '.join(SHORT_NAMES)})."
        )
    return _load(full)


@cache
def _load(full: str) -> Posterior:
    folder = posteriordb_path() / full
    for fname in ("data.json", "reference.json"):
        if not (folder / fname).is_file():
            raise FileNotFoundError(f"{folder / fname} is missing (posterior {full}).")
    data = json.loads((folder / "data.json").read_text())
    ref = json.loads((folder / "reference.json").read_text())
    reference = {
        k: (float(v["mean"]), float(v["sd"]), float(v["q05"]), float(v["q95"]))
        for k, v in ref["reference"].items()
    }
    kwargs = {k: _as_array(v) for k, v in data.items()}
    return Posterior(
        full, MODELS[full], kwargs, reference, int(ref["ndraws"]), data, ADAPT_DELTA[full]
    )
