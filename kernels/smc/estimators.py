r"""Per-run log Z estimators and bounds, and KL intervals (Zhao et al. 2024, sec. 4;
Grosse, Ghahramani and Adams 2015; Brekelmans et al. 2022).

With ``Z`` the normalizer of the target ``sigma = sigma_tilde / Z``:

* lower bounds, ``E[log Z_hat] <= log Z`` because ``E[Z_hat] = Z`` (Jensen): SMC
  (:func:`smc_lower_bound`), IWAE / importance sampling (:func:`iwae_lower_bound`), forward AIS
  (:func:`ais_lower_bound`, SMC with one particle);
* upper bounds, ``E[log Z_hat] >= log Z`` because ``E[1 / Z_hat] = 1 / Z`` when the reference is
  an exact draw from ``sigma``: conditional SMC (:func:`csmc_upper_bound`), IWAE upper bound
  (:func:`iwae_upper_bound`: one exact sample among ``N - 1`` proposals), reverse AIS
  (:func:`reverse_ais_upper_bound`, conditional SMC with one particle; Grosse, Ghahramani and
  Adams 2015, "BDMC").

Every estimator returns one value per run, ``[R]``.

KL intervals from a lower bound ``L`` and an upper bound ``U`` on ``log Z``, with
``f_q = E_q[log sigma_tilde - log q]`` (the ELBO) and ``g_q = E_sigma[log sigma_tilde - log q]``
(the EUBO):

$$KL(q \| \sigma) = \log Z - f_q \in [L - f_q, U - f_q], \qquad
KL(\sigma \| q) = g_q - \log Z \in [g_q - U, g_q - L].$$
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.types import Array, ArrayTree, PRNGKey

__all__ = [
    "log_mean_exp",
    "smc_lower_bound",
    "csmc_upper_bound",
    "iwae_lower_bound",
    "iwae_upper_bound",
    "ais_lower_bound",
    "reverse_ais_upper_bound",
    "KLIntervals",
    "kl_intervals",
    "LogZSummary",
    "summarize",
]


def log_mean_exp(x: Array, axis: int = -1) -> Array:
    """``log mean exp(x)`` along ``axis`` (stable)."""
    x = jnp.asarray(x)
    return jax.nn.logsumexp(x, axis=axis) - jnp.log(x.shape[axis])


def smc_lower_bound(key: PRNGKey, run_fn: Callable[[PRNGKey], ArrayTree], num_runs: int) -> Array:
    """``[R]`` independent SMC estimates ``log Z_hat`` (stochastic lower bounds).

    Args:
        key: PRNG key.
        run_fn: ``key -> result`` with a ``log_Z`` field (e.g. a partial of
            :func:`kernels.smc.sequential.run` or :func:`kernels.smc.tempering.run`). Forward
            AIS is ``tempering.run`` with ``num_particles=1``.
        num_runs: ``R``.
    """
    return jax.vmap(lambda k: run_fn(k).log_Z)(jax.random.split(key, num_runs))


def csmc_upper_bound(
    key: PRNGKey,
    run_fn: Callable[[PRNGKey, ArrayTree], ArrayTree],
    exact_sample_fn: Callable[[PRNGKey], ArrayTree],
    num_runs: int,
) -> Array:
    """``[R]`` conditional-SMC estimates (stochastic upper bounds).

    Args:
        key: PRNG key.
        run_fn: ``(key, reference) -> result`` with ``log_Z``: conditional SMC clamped to the
            reference (reverse AIS with one particle).
        exact_sample_fn: ``key -> reference`` trajectory from an exact draw of ``sigma`` (e.g.
            :func:`kernels.smc.tempering.reference_path` applied to an exact posterior draw).
        num_runs: ``R``.
    """

    def one(k):
        k1, k2 = jax.random.split(k)
        return run_fn(k2, exact_sample_fn(k1)).log_Z

    return jax.vmap(one)(jax.random.split(key, num_runs))


def iwae_lower_bound(log_weights: Array) -> Array:
    """IWAE / importance sampling lower bound ``log (1/N) sum_i w_i``, ``x_i ~ q``.

    Args:
        log_weights: ``[..., N]`` ``log sigma_tilde(x_i) - log q(x_i)``.

    Returns:
        ``[...]`` per-run bounds.
    """
    return log_mean_exp(log_weights, -1)


def iwae_upper_bound(log_weight_exact: Array, log_weights_q: Array) -> Array:
    """IWAE upper bound ``log (1/N) (w(x_0) + sum_{i=1}^{N-1} w(x_i))``, ``x_0 ~ sigma``,
    ``x_i ~ q`` (conditional SMC without resampling; Sobolev and Vetrov 2019).

    Args:
        log_weight_exact: ``[...]`` log weight of the exact sample.
        log_weights_q: ``[..., N - 1]`` log weights of proposal samples.

    Returns:
        ``[...]`` per-run bounds.
    """
    lw = jnp.concatenate([jnp.asarray(log_weight_exact)[..., None], log_weights_q], axis=-1)
    return log_mean_exp(lw, -1)


def _ais_weight(log_prior_fn, log_likelihood_fn, path, betas, xs):
    """``sum_t log pi_{beta_t}(x_t) - log pi_{beta_{t-1}}(x_t)`` along ``xs`` (time first)."""

    def inc(t, x):
        lp = log_prior_fn(x)
        lt = lp + log_likelihood_fn(x)
        return path(lp, lt, betas[t]) - path(lp, lt, betas[t - 1])

    steps = jnp.arange(1, betas.shape[0])
    return jnp.sum(jax.vmap(inc)(steps, jax.tree.map(lambda a: a[1:], xs)))


def ais_lower_bound(
    key: PRNGKey,
    sample_prior_fn: Callable,
    log_prior_fn: Callable,
    log_likelihood_fn: Callable,
    betas: Array,
    kernel: Any,
    num_runs: int,
    **tempering_kwargs: Any,
) -> Array:
    """``[R]`` forward AIS log weights (Neal 2001): stochastic lower bounds of ``log Z``.

    AIS is :func:`kernels.smc.tempering.run` with one particle: ``x_0 ~ pi_0``,
    ``x_t ~ K_{beta_{t-1}}(x_{t-1}, .)``, ``log w = sum_t log pi_{beta_t}(x_t) -
    log pi_{beta_{t-1}}(x_t)``, and ``E[w] = Z``.

    ``sample_prior_fn``, ``log_prior_fn``, ``log_likelihood_fn``, ``betas`` and ``kernel`` are
    as in :func:`kernels.smc.tempering.run` (``betas`` fixed, e.g. frozen from a pilot).

    Args:
        key: PRNG key.
        num_runs: ``R``.
        **tempering_kwargs: ``kernel_params``, ``num_mcmc_steps``, ``path``.
    """
    from kernels.smc import tempering

    def one(k):
        return tempering.run(
            k,
            sample_prior_fn,
            log_prior_fn,
            log_likelihood_fn,
            betas,
            kernel,
            1,
            ess_threshold=0.0,
            **tempering_kwargs,
        ).log_Z

    return jax.vmap(one)(jax.random.split(key, num_runs))


def reverse_ais_upper_bound(
    key: PRNGKey,
    exact_sample_fn: Callable[[PRNGKey], ArrayTree],
    log_prior_fn: Callable,
    log_likelihood_fn: Callable,
    betas: Array,
    kernel: Any,
    num_runs: int,
    **tempering_kwargs: Any,
) -> Array:
    """``[R]`` reverse AIS log weights: stochastic upper bounds of ``log Z`` (BDMC).

    From an exact target draw ``x_K ~ pi_1 / Z``, the chain runs backwards
    ``x_{t-1} ~ K_{beta_{t-1}}(x_t, .)`` (:func:`kernels.smc.tempering.reference_path`; the
    kernels must be reversible) and ``log w`` is the forward AIS weight of that path, so that
    ``E[1 / w] = 1 / Z``. Equal to conditional SMC with one particle clamped to the path.

    ``log_prior_fn``, ``log_likelihood_fn``, ``betas`` and ``kernel`` are as in
    :func:`ais_lower_bound`.

    Args:
        key: PRNG key.
        exact_sample_fn: ``key -> x`` an exact draw from the normalized target.
        num_runs: ``R``.
        **tempering_kwargs: ``kernel_params``, ``num_mcmc_steps``, ``path``.
    """
    from kernels.smc import annealing, tempering

    betas = jnp.asarray(betas)
    path = tempering_kwargs.get("path", annealing.geometric)

    def one(k):
        k1, k2 = jax.random.split(k)
        xs = tempering.reference_path(
            k2,
            exact_sample_fn(k1),
            log_prior_fn,
            log_likelihood_fn,
            betas,
            kernel,
            **tempering_kwargs,
        )
        return _ais_weight(log_prior_fn, log_likelihood_fn, path, betas, xs)

    return jax.vmap(one)(jax.random.split(key, num_runs))


class KLIntervals(NamedTuple):
    """Intervals (lo, hi) for ``KL(q || sigma)`` and ``KL(sigma || q)``, and ``f_q``, ``g_q``."""

    kl_q_sigma: tuple
    kl_sigma_q: tuple
    elbo: Array
    eubo: Array


def kl_intervals(
    lower: Array, upper: Array, log_w_q: Array, log_w_sigma: Array, per_run: bool = False
) -> KLIntervals:
    """KL intervals from log Z bounds and single-sample log weights.

    Args:
        lower: ``[R]`` or scalar lower-bound estimates of ``log Z``.
        upper: ``[R]`` or scalar upper-bound estimates.
        log_w_q: ``[M]`` ``log sigma_tilde(x) - log q(x)`` at ``x ~ q`` (``f_q`` = mean).
        log_w_sigma: ``[M]`` the same at exact draws ``x ~ sigma`` (``g_q`` = mean).
        per_run: ``False``: intervals from the means of ``lower`` and ``upper``; ``True``: one
            interval per run, ``[L_r - f_q, U_r - f_q]`` and ``[g_q - U_r, g_q - L_r]``
            (arrays ``[R]``).

    Returns:
        :class:`KLIntervals` with ``KL(q||sigma) in [L - f_q, U - f_q]`` and
        ``KL(sigma||q) in [g_q - U, g_q - L]``. A draw of ``q`` outside the support of
        ``sigma`` (``log_w_q = -inf``) makes ``f_q = -inf`` and ``KL(q||sigma) = [inf, inf]``
        exactly (not ``nan``, even where a lower bound is ``-inf``).
    """
    L, U = jnp.asarray(lower), jnp.asarray(upper)
    if not per_run:
        L, U = jnp.mean(L), jnp.mean(U)
    f, g = jnp.mean(log_w_q), jnp.mean(log_w_sigma)
    outside = jnp.isneginf(f)
    kl_q = tuple(jnp.where(outside, jnp.inf, b - f) for b in (L, U))
    return KLIntervals(kl_q, (g - U, g - L), f, g)


class LogZSummary(NamedTuple):
    """Summary of ``R`` lower and upper per-run estimates.

    Attributes:
        lower_mean, upper_mean: means of the per-run bounds (the sandwich).
        unbiased_from_lower: ``log mean exp(L)`` (consistent for ``log Z``), with ``*_se`` its
            delta-method standard error ``sd(e^L) / (sqrt(R) mean(e^L))``.
        unbiased_from_upper: ``-log mean exp(-U)``, with its standard error.
        max_lower_threshold: ``max L - log(2R / alpha)``: a distribution-free lower confidence
            limit for ``log Z`` (Markov + union bound), and ``min_upper_threshold`` the upper.
    """

    lower_mean: Array
    upper_mean: Array
    unbiased_from_lower: Array
    unbiased_from_lower_se: Array
    unbiased_from_upper: Array
    unbiased_from_upper_se: Array
    max_lower_threshold: Array
    min_upper_threshold: Array


def _lme_se(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return float(np.log(e.mean()) + x.max()), float(e.std(ddof=1) / (np.sqrt(x.size) * e.mean()))


def summarize(lower: Array, upper: Array, alpha: float = 0.05) -> LogZSummary:
    """Sandwich summary with delta-method and distribution-free intervals (host-side, numpy).

    ``P(L_r >= log Z + c) <= e^{-c}`` by Markov's inequality on ``Z_hat / Z``, so with ``R`` runs
    ``P(max_r L_r >= log Z + log(2R/alpha)) <= alpha/2``; likewise for ``min_r U_r`` with
    ``1 / Z_hat``. Hence ``[max L - log(2R/alpha), min U + log(2R/alpha)]`` covers ``log Z``
    with probability at least ``1 - alpha``.

    Args:
        lower: ``[R]`` lower-bound estimates.
        upper: ``[R]`` upper-bound estimates.
        alpha: level of the distribution-free interval.
    """
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    lo, lo_se = _lme_se(lower)
    up, up_se = _lme_se(-upper)
    c = np.log(2 * lower.size / alpha)
    return LogZSummary(
        lower.mean(),
        upper.mean(),
        lo,
        lo_se,
        -up,
        up_se,
        lower.max() - c,
        upper.min() + np.log(2 * upper.size / alpha),
    )
