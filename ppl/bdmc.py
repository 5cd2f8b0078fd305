r"""Bidirectional Monte Carlo (BDMC) bounds on ``log p(y)`` for NumPyro models.

Grosse, Ghahramani and Adams (2015), "Sandwiching the marginal likelihood using bidirectional
Monte Carlo"; with conditional SMC for the upper bound.

For data simulated from the model, $(\theta^*, y) \sim p(\theta)\, p(y \mid \theta)$, the
latent $\theta^*$ is an exact draw from the posterior $p(\theta \mid y)$. Then

* forward tempered SMC / AIS from the prior gives $\hat Z$ with $E[\hat Z] = Z$, so
  $L = \log \hat Z$ satisfies $E[L] \le \log Z$ (Jensen);
* conditional SMC with a reference path drawn backwards from $\theta^*$ (reverse AIS when
  ``num_particles=1``) gives $\hat Z'$ with $E[1/\hat Z'] = 1/Z$, so
  $U = \log \hat Z'$ satisfies $E[U] \ge \log Z$.

The gap $E[U] - E[L]$ bounds the sum $\mathrm{KL}(q \| \sigma) + \mathrm{KL}(\sigma
\| q)$ of the two KL divergences between the SMC proposal and target on the extended space,
and so measures how well the sampler mixes. Both directions use the same frozen schedule, step
sizes and mass matrices, fixed by a pilot run independent of the bound runs (an adaptive,
particle-dependent schedule would break both bound arguments). By Markov's inequality,
$P(L > \log Z + a) \le e^{-a}$ and $P(U < \log Z - a) \le e^{-a}$; with ``R`` runs
and a union bound, $\max L \le \log Z + \log(2R/\alpha)$ and
$\min U \ge \log Z - \log(2R/\alpha)$ jointly with probability at least ``1 - alpha``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from kernels.types import Array, PRNGKey
from ppl.densities import _check_signature, _partition, check_densities, split_model
from ppl.smc import FrozenSchedule, TemperedSMC, _run_jit

__all__ = ["bdmc", "BDMCResult"]


class BDMCResult(NamedTuple):
    """Output of `bdmc` (``R`` runs).

    Attributes:
        lower: ``(R,)`` forward SMC/AIS estimates of ``log Z`` (stochastic lower bounds).
        upper: ``(R,)`` conditional SMC / reverse AIS estimates (stochastic upper bounds).
        data: dict of observed site values, each ``(R, ...)``: what was bracketed.
        latents: dict of the exact posterior samples (constrained latent sites), ``(R, ...)``.
        schedule: the frozen schedule shared by both directions.
        simulated: whether each run drew its own data set (simulated mode): run ``r`` then
            brackets its own ``log p(data_r)``, and :meth:`summary` never pools bounds of
            different data sets into one bracket.
    """

    lower: Array
    upper: Array
    data: dict
    latents: dict
    schedule: FrozenSchedule
    simulated: bool = False

    @property
    def gap(self) -> Array:
        """``(R,)`` upper minus lower, per run (per data set)."""
        return self.upper - self.lower

    def summary(self, alpha: float = 0.05) -> dict:
        """Means with normal ``1 - alpha`` intervals, the stochastic bounds, and the gap.

        One data set (user data): ``lower_lme = log mean exp(L)`` and ``upper_lme = -log mean
        exp(-U)`` are the consistent (unbiased-in-Z) estimates; ``max_lower_bound = max L -
        log(2R/alpha)`` and ``min_upper_bound = min U + log(2R/alpha)`` bracket ``log Z`` with
        probability at least ``1 - alpha``.

        Simulated mode (a data set per run, :attr:`simulated`): those four pool runs of different
        ``log Z_r`` and are ``None``. Instead ``brackets`` ``(R, 2)`` holds, per data set,
        ``[L_r - log(2R/alpha), U_r + log(2R/alpha)]``: by Markov's inequality and a union bound
        over the ``2R`` one-sided events, every ``log Z_r`` lies in its bracket with probability
        at least ``1 - alpha``. ``lower_mean`` / ``upper_mean`` are then bounds on the average
        ``log Z_r`` over data sets, and ``gap_mean`` (paired per data set) is the mixing
        diagnostic.
        """
        from scipy import special, stats

        lo, up = np.asarray(self.lower, np.float64), np.asarray(self.upper, np.float64)
        R = lo.size
        zq = stats.norm.ppf(1 - alpha / 2)

        def ci(x):
            se = x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else np.nan
            return float(x.mean()), (float(x.mean() - zq * se), float(x.mean() + zq * se))

        slack = np.log(2 * R / alpha)
        out = {
            "num_runs": R,
            "simulated": bool(self.simulated),
            "lower_mean": ci(lo),
            "upper_mean": ci(up),
            "gap_mean": ci(up - lo),
        }
        if self.simulated:
            out.update(
                lower_lme=None, upper_lme=None, max_lower_bound=None, min_upper_bound=None,
                brackets=np.stack([lo - slack, up + slack], axis=1),
            )
        else:
            out.update(
                lower_lme=float(special.logsumexp(lo) - np.log(R)),
                upper_lme=float(-(special.logsumexp(-up) - np.log(R))),
                max_lower_bound=float(lo.max() - slack),
                min_upper_bound=float(up.min() + slack),
            )
        return out

    def to_dataframe_dict(self) -> dict:
        """Per-run columns ``lower``, ``upper``, ``gap`` as numpy arrays."""
        return {
            "lower": np.asarray(self.lower),
            "upper": np.asarray(self.upper),
            "gap": np.asarray(self.gap),
        }


def _conditioned(model):
    """``model`` with sites named in the keyword ``_bdmc_data`` observed (as a traced input)."""

    def conditioned(*args, _bdmc_data, **kwargs):
        return handlers.condition(model, data=_bdmc_data)(*args, **kwargs)

    return conditioned


def _simulate(key, model, args, kwargs, observed, num_runs):
    """Joint prior draws: latents (constrained) and the observed sites' values, ``(R, ...)``."""
    tr0 = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    names = [n for n, s in tr0.items() if s["type"] == "sample"]
    for name in observed:
        if name not in tr0 or tr0[name]["type"] != "sample":
            raise ValueError(f"observed site {name!r} is not a sample site of the model: {names}")
        if tr0[name]["is_observed"]:
            raise ValueError(
                f"site {name!r} is already observed: for simulated data call bdmc without the "
                "data keyword (e.g. y=None), or pass data=... and posterior_samples=..."
            )
    latent = [
        n
        for n, s in tr0.items()
        if s["type"] == "sample" and not s["is_observed"] and n not in observed
    ]

    def one(k):
        tr = handlers.trace(handlers.seed(model, k)).get_trace(*args, **kwargs)
        return {n: tr[n]["value"] for n in observed}, {n: tr[n]["value"] for n in latent}

    return jax.vmap(one)(jax.random.split(key, num_runs))


def _observed_from_none_keywords(model, args, kwargs) -> tuple[str, ...]:
    """Keywords passed as ``None`` that name a sample site: the data sites to simulate."""
    names = [k for k, v in kwargs.items() if v is None]
    if not names:
        return ()
    _check_signature(model, args, kwargs)
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    return tuple(k for k in names if k in tr and tr[k]["type"] == "sample")


def bdmc(
    key: PRNGKey,
    model: Callable,
    *args: Any,
    num_particles: int = 100,
    num_runs: int = 8,
    observed: str | Sequence[str] | None = None,
    data: dict | None = None,
    posterior_samples: dict | None = None,
    kernel: Any = "hmc",
    num_mcmc_steps: int = 2,
    kernel_params: dict | None = None,
    schedule: Any = None,
    pilot_particles: int = 256,
    **kwargs: Any,
) -> BDMCResult:
    """Sandwich ``log p(y)`` between forward SMC/AIS and conditional SMC / reverse AIS.

    Two modes:

    * simulated (default): the data sites are the keywords passed as ``None`` that name a
      sample site (``bdmc(key, model, X, y=None)``), or those named by ``observed``; each run
      draws ``(latents, data)`` from the model's joint prior and brackets ``log p(data)``.
    * user data: ``data`` (dict site -> value) and ``posterior_samples`` (dict of constrained
      latent values, leading axis ``num_runs``, or without it to share one sample), exact
      posterior draws for that data.

    Args:
        key: PRNG key.
        model: NumPyro model with continuous latent sites.
        *args: positional arguments of the model.
        num_particles: particles of both directions (1: forward AIS and reverse AIS).
        num_runs: ``R``, independent runs (data sets in simulated mode).
        observed: names of the sample sites to simulate and treat as data (default: the
            keywords passed as ``None`` that name a sample site).
        data: observed values (user-data mode), dict keyed by site name.
        posterior_samples: exact posterior samples for ``data`` (user-data mode).
        kernel: the move, as in `ppl.TemperedSMC` (default ``"hmc"``).
        num_mcmc_steps: kernel steps per temperature.
        kernel_params: keyword parameters of the kernel step.
        schedule: ``None`` (ESS-adaptive pilot run, then frozen), an array of betas (step sizes
            and mass matrices frozen from a pilot on it) or a `ppl.smc.FrozenSchedule`.
        pilot_particles: particles of the pilot run.
        **kwargs: other keyword arguments of the model; in simulated mode the data keywords
            set to ``None``.

    Returns:
        `BDMCResult`.
    """
    if num_runs < 1:
        raise ValueError(f"num_runs must be at least 1, got {num_runs}")
    k_sim, k_pilot, k_lo, k_up = jax.random.split(key, 4)
    if data is None:
        if observed is None:
            observed = _observed_from_none_keywords(model, args, kwargs)
        if not observed:
            raise ValueError(
                "bdmc needs to know the data sites: pass them as keywords set to None (e.g. "
                "y=None for numpyro.sample('y', ..., obs=y)), or observed=<site name(s)> to "
                "simulate data from the model, or data={site: value} with "
                "posterior_samples={site: exact draws}"
            )
        if posterior_samples is not None:
            raise ValueError("posterior_samples needs data=...; simulated runs draw their own")
        observed = (observed,) if isinstance(observed, str) else tuple(observed)
        sim_data, latents = _simulate(k_sim, model, args, kwargs, observed, num_runs)
    else:
        if posterior_samples is None:
            raise ValueError(
                "with data=..., pass posterior_samples=... (exact posterior draws) for the upper "
                "bound; or simulate data with observed=... instead"
            )
        data = {k: jnp.asarray(v) for k, v in data.items()}
        sim_data = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_runs, *x.shape)), data)
        latents = {k: jnp.asarray(v) for k, v in posterior_samples.items()}
    cond = _conditioned(model)
    first = jax.tree.map(lambda x: x[0], sim_data)
    kw0 = {**kwargs, "_bdmc_data": first}
    dens = split_model(cond, args, kw0)  # validates the model and the data
    check_densities(cond, *_partition((args, kw0)))
    if data is not None:
        missing = set(dens.latent) - set(latents)
        if missing:
            raise ValueError(f"posterior_samples lacks the latent sites {sorted(missing)}")
        lead = {k: jnp.shape(latents[k]) for k in dens.latent}
        if not all(len(s) and s[0] == num_runs for s in lead.values()):
            single = dens.unconstrain({k: latents[k] for k in dens.latent})
            if single.shape == (dens.dim,):
                latents = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_runs, *x.shape)), latents)
            else:
                raise ValueError(
                    f"posterior_samples must have leading axis num_runs={num_runs} or none; "
                    f"shapes {lead}"
                )
    latents = {k: latents[k] for k in dens.latent}

    # pilot: freeze the schedule, step sizes and mass matrices
    if isinstance(schedule, FrozenSchedule):
        frozen = schedule
    else:
        pilot = TemperedSMC(
            cond,
            kernel,
            num_particles=pilot_particles,
            num_mcmc_steps=num_mcmc_steps,
            kernel_params=kernel_params,
            schedule=schedule,
        )
        frozen = pilot.run(k_pilot, *args, **kw0).frozen()
    smc = TemperedSMC(
        cond,
        kernel,
        num_particles=num_particles,
        num_mcmc_steps=num_mcmc_steps,
        kernel_params=kernel_params,
        schedule=frozen,
    )

    def one(k, d, ref):
        dyn, spec = _partition((args, {**kwargs, "_bdmc_data": d}))
        return _run_jit(smc, k, dyn, spec, ref).log_Z

    keys_lo = jax.random.split(k_lo, num_runs)
    keys_up = jax.random.split(k_up, num_runs)
    lower = jax.vmap(lambda k, d: one(k, d, None))(keys_lo, sim_data)
    upper = jax.vmap(one)(keys_up, sim_data, latents)
    return BDMCResult(lower, upper, sim_data, latents, frozen, simulated=data is None)


class _CallableModule(types.ModuleType):
    """``ppl.bdmc`` is this module once imported (Python sets the submodule on the package), so
    calling the module calls :func:`bdmc`: ``ppl.bdmc(...)`` works on every call, in any
    import order."""

    def __call__(self, *args, **kwargs):
        return bdmc(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
