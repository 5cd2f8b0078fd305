r"""Mutual information bounds for NumPyro models (Brekelmans, Huang, Ghassemi, Ver Steeg, Grosse
and Makhzani, ICLR 2022, "Improving Mutual Information Estimation with Annealed and
Energy-Based Bounds").

For a model $p(z)\, p(x \mid z)$ with latent sites $z$ and data sites $x$,

$$I(x; z) = E_{p(x, z)}[\log p(x \mid z)] - E_{p(x)}[\log p(x)].$$

Each run draws $(z_r, x_r)$ from the joint prior, evaluates $\log p(x_r \mid z_r)$ exactly, and
brackets $\log p(x_r)$ as `ppl.bdmc` does: $K$ forward AIS chains (or SMC) give $L_r$ with
$E[L_r] \le \log p(x_r)$, and the same with one chain run backwards from the exact $z_r$ gives
$U_r$ with $E[U_r] \ge \log p(x_r)$. Hence

$$E[\log p(x \mid z) - U] \;\le\; I(x; z) \;\le\; E[\log p(x \mid z) - L].$$

With ``num_particles=1`` this is BDMC; with the schedule ``[0, 1]`` the IWAE bounds with the
prior as proposal (whose lower bound cannot exceed ``log K``). The pure-JAX estimators are in
:mod:`kernels.smc.mutual_information` (including GIWAE, InfoNCE and Barber-Agakov, which need
only ``p(z)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from kernels.types import Array, PRNGKey
from ppl.bdmc import _conditioned, _observed_from_none_keywords, _simulate
from ppl.densities import _partition, check_densities, split_model
from ppl.smc import FrozenSchedule, TemperedSMC, _run_jit

__all__ = ["mutual_information", "MIResult"]


class MIResult(NamedTuple):
    """Output of `mutual_information` (``R`` runs, one joint draw each).

    Attributes:
        lower: ``(R,)`` ``log p(x_r | z_r) - U_r``; the mean is a lower bound on ``I(x; z)``.
        upper: ``(R,)`` ``log p(x_r | z_r) - L_r``; the mean is an upper bound.
        log_likelihood: ``(R,)`` ``log p(x_r | z_r)``.
        log_marginal_lower: ``(R,)`` ``L_r`` (forward AIS / SMC on ``log p(x_r)``).
        log_marginal_upper: ``(R,)`` ``U_r`` (reverse AIS / conditional SMC).
        data: dict of the simulated data sites, each ``(R, ...)``.
        latents: dict of the latent sites of the joint draws (constrained), ``(R, ...)``.
        schedule: the frozen schedule shared by all runs and both directions.
    """

    lower: Array
    upper: Array
    log_likelihood: Array
    log_marginal_lower: Array
    log_marginal_upper: Array
    data: dict
    latents: dict
    schedule: FrozenSchedule

    @property
    def gap(self) -> Array:
        """``(R,)`` upper minus lower (``U_r - L_r``)."""
        return self.upper - self.lower

    def summary(self, alpha: float = 0.05) -> dict:
        """Means of the bounds and of the gap with normal ``1 - alpha`` intervals.

        The interval of ``lower`` and ``upper`` contains the Monte Carlo error of the average
        over ``p(x, z)``; that of the gap is the error of the (paired) difference.
        """
        from scipy import stats

        zq = stats.norm.ppf(1 - alpha / 2)

        def ci(x):
            x = np.asarray(x, np.float64)
            s = x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else np.nan
            return float(x.mean()), (float(x.mean() - zq * s), float(x.mean() + zq * s))

        return {
            "num_runs": int(np.size(self.lower)),
            "lower": ci(self.lower),
            "upper": ci(self.upper),
            "gap": ci(self.gap),
        }


def _check_latent(model, args, kwargs, observed, latent) -> None:
    """``latent`` must name every unobserved sample site (``p(x | z)`` in closed form)."""
    if latent is None:
        return
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    sites = [
        n
        for n, s in tr.items()
        if s["type"] == "sample" and not s["is_observed"] and n not in observed
    ]
    latent = (latent,) if isinstance(latent, str) else tuple(latent)
    unknown = set(latent) - set(sites)
    if unknown:
        raise ValueError(
            f"latent sites {sorted(unknown)} are not latent sample sites of the model "
            f"(latent: {sites}, observed: {list(observed)})"
        )
    rest = set(sites) - set(latent)
    if rest:
        raise ValueError(
            f"I(x; z) for a subset z of the latents needs p(x | z) with the other latents "
            f"{sorted(rest)} integrated out, which this estimator does not do: name every "
            "latent site (or leave latent=None), or make the others observed"
        )


def mutual_information(
    key: PRNGKey,
    model: Callable,
    *args: Any,
    latent: str | Sequence[str] | None = None,
    observed: str | Sequence[str] | None = None,
    num_particles: int = 8,
    num_runs: int = 16,
    kernel: Any = "hmc",
    num_mcmc_steps: int = 2,
    kernel_params: dict | None = None,
    schedule: Any = None,
    ess_threshold: float = 0.0,
    target_ess: float = 0.95,
    pilot_particles: int = 256,
    **kwargs: Any,
) -> MIResult:
    """Lower and upper bounds on ``I(x; z)`` per run, from multi-sample AIS (or SMC).

    Args:
        key: PRNG key.
        model: NumPyro model with continuous latent sites.
        *args: positional arguments of the model.
        latent: the latent sites ``z`` (default: every unobserved sample site). All of them:
            ``p(x | z)`` must be computable, so nuisance latents are not supported.
        observed: the data sites ``x`` (default: the keywords passed as ``None`` that name a
            sample site, e.g. ``mutual_information(key, model, y=None)``).
        num_particles: ``K``, AIS chains (SMC particles) per bound; 1 is BDMC.
        num_runs: ``R``, joint draws.
        kernel: the move, as in `ppl.TemperedSMC` (a reversible kernel, default ``"hmc"``).
        num_mcmc_steps: kernel steps per temperature.
        kernel_params: keyword parameters of the kernel step.
        schedule: ``None`` (ESS-adaptive pilot on an extra joint draw, then frozen), an array
            of betas (``[0, 1]``: IWAE; step sizes and mass matrices frozen from a pilot on
            it), or a `ppl.smc.FrozenSchedule`.
        ess_threshold: 0 (default): independent AIS chains, the paper's multi-sample AIS;
            ``> 0``: SMC and conditional SMC resampling when the ESS falls below it.
        target_ess: the pilot's ESS-adaptive schedule: conditional ESS of each step (higher:
            more temperatures; the gap falls roughly as ``1 - target_ess``).
        pilot_particles: particles of the pilot run.
        **kwargs: other keyword arguments of the model; the data keywords set to ``None``.

    Returns:
        `MIResult`; ``result.lower.mean() <= I(x; z) <= result.upper.mean()`` in expectation.
    """
    if num_runs < 2:
        raise ValueError(f"num_runs must be at least 2 (an average over p(x)), got {num_runs}")
    if num_particles < 1:
        raise ValueError(f"num_particles must be at least 1, got {num_particles}")
    k_sim, k_pilot, k_lo, k_up = jax.random.split(key, 4)
    if observed is None:
        observed = _observed_from_none_keywords(model, args, kwargs)
    if not observed:
        raise ValueError(
            "mutual_information needs the data sites x: pass them as keywords set to None "
            "(e.g. y=None for numpyro.sample('y', ..., obs=y)) or observed=<site name(s)>"
        )
    observed = (observed,) if isinstance(observed, str) else tuple(observed)
    _check_latent(model, args, kwargs, observed, latent)
    # one extra joint draw for the pilot, so that the schedule is independent of the runs
    sim_data, latents = _simulate(k_sim, model, args, kwargs, observed, num_runs + 1)
    pilot_data = jax.tree.map(lambda x: x[-1], sim_data)
    sim_data, latents = jax.tree.map(lambda x: x[:-1], (sim_data, latents))
    cond = _conditioned(model)
    kw0 = {**kwargs, "_bdmc_data": pilot_data}
    dens = split_model(cond, args, kw0)  # validates the model and the data
    check_densities(cond, *_partition((args, kw0)))
    latents = {k: latents[k] for k in dens.latent}

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
            target_ess=target_ess,
        )
        frozen = pilot.run(k_pilot, *args, **kw0).frozen()
    smc = TemperedSMC(
        cond,
        kernel,
        num_particles=num_particles,
        num_mcmc_steps=num_mcmc_steps,
        kernel_params=kernel_params,
        schedule=frozen,
        ess_threshold=ess_threshold,
    )

    def log_z(k, d, ref):
        dyn, spec = _partition((args, {**kwargs, "_bdmc_data": d}))
        return _run_jit(smc, k, dyn, spec, ref).log_Z

    def log_lik(d, values):
        dd = split_model(cond, args, {**kwargs, "_bdmc_data": d})
        return dd.log_likelihood(dd.unconstrain(values))

    lower_z = jax.vmap(lambda k, d: log_z(k, d, None))(jax.random.split(k_lo, num_runs), sim_data)
    upper_z = jax.vmap(log_z)(jax.random.split(k_up, num_runs), sim_data, latents)
    ll = jax.jit(jax.vmap(log_lik))(sim_data, latents)
    return MIResult(ll - upper_z, ll - lower_z, ll, lower_z, upper_z, sim_data, latents, frozen)
