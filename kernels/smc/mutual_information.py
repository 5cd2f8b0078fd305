r"""Lower and upper bounds on the mutual information ``I(x; z)`` of a generative model
``p(z) p(x | z)`` (Brekelmans, Huang, Ghassemi, Ver Steeg, Grosse and Makhzani, ICLR 2022,
"Improving Mutual Information Estimation with Annealed and Energy-Based Bounds").

With the likelihood known,

$$I(x; z) = E_{p(x, z)}[\log p(x \mid z)] - E_{p(x)}[\log p(x)],$$

so a stochastic *upper* bound ``U(x)`` on ``log p(x)`` gives a *lower* bound on the MI and a
lower bound ``L(x)`` an upper one: ``E[log p(x|z) - U] <= I <= E[log p(x|z) - L]``. A joint
draw ``(z, x) ~ p(z) p(x | z)`` makes ``z`` an exact posterior draw of ``p(z | x)``, which is
what the upper bound on ``log p(x)`` needs.

* Multi-sample AIS (:func:`ais_bounds`): ``K`` AIS chains from the prior
  give ``L = log (1/K) sum_k w_k``; ``K - 1`` forward chains plus one chain run *backwards*
  from the exact ``z`` give ``U = log (1/K) (w_1^{rev} + sum_{k >= 2} w_k)``. ``K = 1`` is
  BDMC (Grosse, Ghahramani and Adams 2015); one temperature (``betas = [0, 1]``) is IWAE
  (:func:`iwae_bounds`). With resampling (``ess_threshold > 0``) they are the SMC and
  conditional-SMC bounds, valid as well.
* GIWAE (:func:`giwae_lower_bound`) when only the prior ``p(z)`` is known
  (not the likelihood): with a proposal ``q(z | x)`` and a critic ``T(x, z)``,

  $$I \ge E\Big[\log \frac{q(z_1 \mid x)}{p(z_1)} + T(x, z_1)
  - \log \frac{1}{K} \sum_{k=1}^K e^{T(x, z_k)}\Big], \qquad
  (x, z_1) \sim p, \; z_{2:K} \sim q(\cdot \mid x).$$

  ``K = 1`` (or constant ``T``) is Barber-Agakov (:func:`barber_agakov_lower_bound`);
  ``q = p(z)`` is InfoNCE (:func:`infonce_lower_bound`), which never exceeds ``log K``;
  ``T = log p(x, z) - log q(z | x)`` gives the IWAE lower bound of :func:`iwae_bounds`.

Every function returns one value per run (per joint draw), ``[R]``; average them for the
bound, and their standard error is the Monte Carlo error of that average.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from kernels.smc import annealing, estimators, tempering
from kernels.smc import resampling as rs
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = [
    "MIBounds",
    "ais_bounds",
    "iwae_bounds",
    "giwae_lower_bound",
    "barber_agakov_lower_bound",
    "infonce_lower_bound",
]


class MIBounds(NamedTuple):
    """Per-run mutual information bounds (``R`` joint draws ``(z_r, x_r)``).

    Attributes:
        lower: ``[R]`` ``log p(x_r | z_r) - U_r`` (mean: a lower bound on ``I(x; z)``).
        upper: ``[R]`` ``log p(x_r | z_r) - L_r`` (mean: an upper bound).
        log_likelihood: ``[R]`` ``log p(x_r | z_r)``.
        log_marginal_lower: ``[R]`` ``L_r``, stochastic lower bounds on ``log p(x_r)``.
        log_marginal_upper: ``[R]`` ``U_r``, stochastic upper bounds on ``log p(x_r)``.
    """

    lower: Array
    upper: Array
    log_likelihood: Array
    log_marginal_lower: Array
    log_marginal_upper: Array

    @property
    def gap(self) -> Array:
        """``[R]`` upper minus lower (equal to ``U_r - L_r``)."""
        return self.upper - self.lower


def _bounds(ll, lo, up) -> MIBounds:
    return MIBounds(ll - up, ll - lo, ll, lo, up)


def ais_bounds(
    key: PRNGKey,
    sample_joint_fn: Callable[[PRNGKey], tuple[ArrayTree, ArrayTree]],
    sample_prior_fn: Callable[[PRNGKey], ArrayTree],
    log_prior_fn: Callable[[ArrayTree], Array],
    log_likelihood_fn: Callable[[ArrayTree, ArrayTree], Array],
    betas: Array,
    kernel: Any,
    num_chains: int,
    num_runs: int,
    *,
    kernel_params: dict | None = None,
    num_mcmc_steps: int = 1,
    path: Callable = annealing.geometric,
    ess_threshold: float = 0.0,
    resampling: rs.Scheme = rs.systematic,
) -> MIBounds:
    """Multi-sample AIS bounds on ``I(x; z)`` (Brekelmans et al. 2022).

    Run ``r``: ``(z, x) ~ p(z) p(x | z)``; ``L`` is the log of the average weight of ``K``
    forward AIS chains on ``pi_beta(z) ∝ p(z) p(x | z)^beta``; ``U`` the same with chain 0
    replaced by the reverse chain from ``z`` (:func:`kernels.smc.tempering.reference_path`;
    the kernel must be reversible). Both use :func:`kernels.smc.tempering.run` on the same
    ``x`` and ``betas``.

    Args:
        key: PRNG key.
        sample_joint_fn: ``key -> (z, x)``, one joint draw.
        sample_prior_fn: ``key -> z``, a draw from ``p(z)``.
        log_prior_fn: ``z -> log p(z)`` (normalized).
        log_likelihood_fn: ``(z, x) -> log p(x | z)`` (normalized in ``x``).
        betas: ``[T + 1]`` fixed schedule from 0 to 1 (``[0, 1]``: IWAE with the prior as
            proposal).
        kernel: BlackJAX-style MCMC move (``init``, ``build_kernel``).
        num_chains: ``K``, chains per bound (1: BDMC).
        num_runs: ``R``, joint draws.
        kernel_params: keyword parameters of the kernel step.
        num_mcmc_steps: MCMC steps per temperature.
        path: annealing path (:mod:`kernels.smc.annealing`).
        ess_threshold: 0 (default): independent AIS chains; ``> 0``: SMC / conditional SMC
            with ESS-triggered resampling.
        resampling: resampling scheme when ``ess_threshold > 0``.

    Returns:
        :class:`MIBounds`.
    """
    kw = dict(kernel_params=kernel_params, num_mcmc_steps=num_mcmc_steps, path=path)

    def one(k):
        k_joint, k_lo, k_ref, k_up = jax.random.split(k, 4)
        z, x = sample_joint_fn(k_joint)
        lik = lambda u: log_likelihood_fn(u, x)  # noqa: E731

        def run(kk, ref):
            return tempering.run(
                kk,
                sample_prior_fn,
                log_prior_fn,
                lik,
                betas,
                kernel,
                num_chains,
                resampling=resampling,
                ess_threshold=ess_threshold,
                reference=ref,
                **kw,
            ).log_Z

        ref = tempering.reference_path(k_ref, z, log_prior_fn, lik, betas, kernel, **kw)
        return log_likelihood_fn(z, x), run(k_lo, None), run(k_up, ref)

    return _bounds(*jax.vmap(one)(jax.random.split(key, num_runs)))


def iwae_bounds(
    key: PRNGKey,
    sample_joint_fn: Callable[[PRNGKey], tuple[ArrayTree, ArrayTree]],
    sample_proposal_fn: Callable[[PRNGKey, ArrayTree], ArrayTree],
    log_proposal_fn: Callable[[ArrayTree, ArrayTree], Array],
    log_prior_fn: Callable[[ArrayTree], Array],
    log_likelihood_fn: Callable[[ArrayTree, ArrayTree], Array],
    num_samples: int,
    num_runs: int,
) -> MIBounds:
    """IWAE bounds on ``I(x; z)`` with a proposal ``q(z | x)`` (Brekelmans et al. 2022).

    With ``w(z) = p(x, z) / q(z | x)``: ``L = log (1/K) sum_k w(z_k)``, ``z_k ~ q``, and
    ``U = log (1/K) (w(z) + sum_{k=2}^K w(z_k))`` with the exact ``z`` of the joint draw
    (:func:`kernels.smc.estimators.iwae_lower_bound`, ``iwae_upper_bound``). The MI lower bound
    ``E[log p(x|z) - U]`` rises to ``I`` and the upper bound falls to it as ``K`` grows; with
    ``q = p(z | x)`` both are exact at ``K = 1``.

    Args:
        key: PRNG key.
        sample_joint_fn: ``key -> (z, x)``.
        sample_proposal_fn: ``(key, x) -> z``, a draw from ``q(z | x)`` (``p(z)``: ignore ``x``).
        log_proposal_fn: ``(z, x) -> log q(z | x)``.
        log_prior_fn: ``z -> log p(z)``.
        log_likelihood_fn: ``(z, x) -> log p(x | z)``.
        num_samples: ``K``.
        num_runs: ``R``.

    Returns:
        :class:`MIBounds`.
    """

    def one(k):
        k_joint, k_lo, k_up = jax.random.split(k, 3)
        z, x = sample_joint_fn(k_joint)
        log_w = lambda u: log_prior_fn(u) + log_likelihood_fn(u, x) - log_proposal_fn(u, x)  # noqa: E731
        draw = lambda kk, n: jax.vmap(lambda c: sample_proposal_fn(c, x))(jax.random.split(kk, n))  # noqa: E731
        lo = estimators.iwae_lower_bound(jax.vmap(log_w)(draw(k_lo, num_samples)))
        others = jax.vmap(log_w)(draw(k_up, num_samples - 1)) if num_samples > 1 else jnp.zeros(0)
        up = estimators.iwae_upper_bound(log_w(z), others)
        return log_likelihood_fn(z, x), lo, up

    return _bounds(*jax.vmap(one)(jax.random.split(key, num_runs)))


def giwae_lower_bound(
    key: PRNGKey,
    sample_joint_fn: Callable[[PRNGKey], tuple[ArrayTree, ArrayTree]],
    sample_proposal_fn: Callable[[PRNGKey, ArrayTree], ArrayTree],
    log_proposal_fn: Callable[[ArrayTree, ArrayTree], Array],
    log_prior_fn: Callable[[ArrayTree], Array],
    critic_fn: Callable[[ArrayTree, ArrayTree], Array],
    num_samples: int,
    num_runs: int,
) -> Array:
    """``[R]`` GIWAE lower bound terms (Brekelmans et al. 2022); needs ``p(z)``
    but not ``p(x | z)``.

    ``log q(z_1|x) - log p(z_1) + T(x, z_1) - log (1/K) sum_{k=1}^K e^{T(x, z_k)}`` with
    ``(z_1, x) ~ p`` and ``z_{2:K} ~ q(z | x)``. Its mean is at most ``I(x; z)`` for every
    ``q`` and ``T`` (the gap is ``E_x KL`` between the extended target and proposal on
    ``z_{1:K}``), and at most ``E[log q/p] + log K``. With the same key and
    ``T = log p(x, z) - log q(z | x)`` it equals ``iwae_bounds(...).lower`` run by run.

    Args:
        key: PRNG key.
        sample_joint_fn: ``key -> (z, x)``.
        sample_proposal_fn: ``(key, x) -> z``, a draw from ``q(z | x)``.
        log_proposal_fn: ``(z, x) -> log q(z | x)``.
        log_prior_fn: ``z -> log p(z)``.
        critic_fn: ``(z, x) -> T(x, z)`` (any real function; ``log p(x|z)`` is optimal for
            ``q = p(z)``).
        num_samples: ``K``.
        num_runs: ``R``.
    """

    def one(k):
        k_joint, _, k_q = jax.random.split(k, 3)  # the keys of iwae_bounds' upper bound
        z, x = sample_joint_fn(k_joint)
        t1 = critic_fn(z, x)
        if num_samples > 1:
            zs = jax.vmap(lambda c: sample_proposal_fn(c, x))(
                jax.random.split(k_q, num_samples - 1)
            )
            ts = jnp.concatenate([t1[None], jax.vmap(lambda u: critic_fn(u, x))(zs)])
        else:
            ts = t1[None]
        return log_proposal_fn(z, x) - log_prior_fn(z) + t1 - estimators.log_mean_exp(ts)

    return jax.vmap(one)(jax.random.split(key, num_runs))


def barber_agakov_lower_bound(
    key: PRNGKey,
    sample_joint_fn: Callable[[PRNGKey], tuple[ArrayTree, ArrayTree]],
    log_proposal_fn: Callable[[ArrayTree, ArrayTree], Array],
    log_prior_fn: Callable[[ArrayTree], Array],
    num_runs: int,
) -> Array:
    """``[R]`` Barber-Agakov terms ``log q(z | x) - log p(z)``, ``(z, x) ~ p``: GIWAE with
    ``K = 1``; the mean is ``I - E_x KL(p(z|x) || q(z|x)) <= I``."""

    def one(k):
        z, x = sample_joint_fn(k)
        return log_proposal_fn(z, x) - log_prior_fn(z)

    return jax.vmap(one)(jax.random.split(key, num_runs))


def infonce_lower_bound(scores: Array) -> Array:
    """InfoNCE terms (van den Oord et al. 2018) from a batch of ``K`` joint pairs.

    ``T_ii - log (1/K) sum_j e^{T_ij}`` with ``scores[i, j] = T(x_i, z_j)`` and ``(x_i, z_i)``
    joint draws: GIWAE with ``q = p(z)`` (the other ``z_j`` are prior draws for ``x_i``). The
    mean is at most ``min(I, log K)``.

    Args:
        scores: ``[..., K, K]`` critic values.

    Returns:
        ``[..., K]`` per-pair terms (average them).
    """
    scores = jnp.asarray(scores)
    diag = jnp.diagonal(scores, axis1=-2, axis2=-1)
    return diag - estimators.log_mean_exp(scores, -1)
