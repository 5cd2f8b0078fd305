r"""Thermodynamic variational objective (TVO) bounds on ``log Z`` from tempered SMC particles
(Masrani, Le and Wood, NeurIPS 2019; Brekelmans, Masrani, Wood, Ver Steeg and Galstyan, ICML
2020, "All in the Exponential Family").

On the geometric path ``pi_beta(z) ∝ pi_0(z) L(z)^beta`` (``pi_0`` normalized; ``pi_0 = q(z|x)``
and ``L = p(x, z) / q(z | x)`` in the variational setting), thermodynamic integration gives

$$\log Z = \int_0^1 \eta(\beta)\, d\beta, \qquad \eta(\beta) = E_{\pi_\beta}[\log L],$$

and ``eta' = Var_{pi_beta}[log L] >= 0``, so for ``0 = beta_0 < ... < beta_K = 1`` the left
and right Riemann sums bracket it:

$$\mathrm{TVO}_L = \sum_t (\beta_t - \beta_{t-1})\, \eta(\beta_{t-1}) \;\le\; \log Z \;\le\;
\mathrm{TVO}_U = \sum_t (\beta_t - \beta_{t-1})\, \eta(\beta_t).$$

``K = 1`` gives the ELBO and the EUBO. ``TVO_L`` and ``TVO_U`` are the expected forward and
reverse AIS log weights with perfect transitions, and ``TVO_U - TVO_L = sum_t Δβ_t Δη_t`` is
the sum of the symmetrized KLs between neighbouring ``pi_beta``. That gap is
``(eta(1) - eta(0)) / K`` for linear *and* moment-spaced schedules (they split it differently
between the two bounds); the constant-speed (thermodynamic length) spacing minimizes it.

:func:`tempered_moments` estimates ``eta(beta_t)`` and ``Var_{pi_beta_t}[log L]`` with the
self-normalized weighted particles of tempered SMC at every temperature (consistent in ``N``,
not unbiased: the TVO bounds from particles hold up to that Monte Carlo error);
:func:`tvo_bounds` sums them; :func:`kernels.smc.annealing.moment_spaced` builds the schedule
with equally spaced ``eta``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from kernels.smc import resampling as rs
from kernels.smc import sequential, tempering
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = ["TemperedMoments", "tempered_moments", "tvo_bounds", "TVOBounds"]


class TemperedMoments(NamedTuple):
    """Output of :func:`tempered_moments` (``K + 1`` temperatures).

    Attributes:
        betas: ``[K + 1]`` the schedule.
        moments: ``[K + 1]`` ``eta(beta_t)``, weighted mean of ``log L`` at ``pi_{beta_t}``.
        variances: ``[K + 1]`` weighted variance of ``log L`` at ``pi_{beta_t}``
            (``d eta / d beta``).
        log_Z: scalar SMC estimate ``log Z_hat`` of the same run (a stochastic lower bound).
        ess: ``[K + 1]`` ESS of the weights at each temperature.
    """

    betas: Array
    moments: Array
    variances: Array
    log_Z: Array
    ess: Array


class TVOBounds(NamedTuple):
    """TVO left and right Riemann sums (see the module docstring)."""

    lower: Array
    upper: Array

    @property
    def gap(self) -> Array:
        return self.upper - self.lower


def tvo_bounds(betas: Array, moments: Array) -> TVOBounds:
    """Left and right Riemann sums of ``eta`` over the schedule.

    Args:
        betas: ``[..., K + 1]`` increasing from 0 to 1.
        moments: ``[..., K + 1]`` ``eta(beta_t) = E_{pi_beta_t}[log L]`` (exact, or estimates
            from :func:`tempered_moments`).

    Returns:
        :class:`TVOBounds` ``(lower, upper)``, each ``[...]``; ``lower <= log Z <= upper``
        when the moments are exact and the path is geometric.
    """
    betas, moments = jnp.asarray(betas), jnp.asarray(moments)
    d = jnp.diff(betas, axis=-1)
    return TVOBounds(
        jnp.sum(d * moments[..., :-1], axis=-1), jnp.sum(d * moments[..., 1:], axis=-1)
    )


def _weighted_moments(log_w: Array, ll: Array) -> tuple[Array, Array]:
    w = jnp.exp(rs.normalize(log_w))
    ll = jnp.where(w > 0, ll, 0.0)  # a zero-weight particle with log L = -inf adds nothing
    m = jnp.sum(w * ll)
    return m, jnp.sum(w * (ll - m) ** 2)


def tempered_moments(
    key: PRNGKey,
    sample_prior_fn: Callable[[PRNGKey], ArrayTree],
    log_prior_fn: Callable[[ArrayTree], Array],
    log_likelihood_fn: Callable[[ArrayTree], Array],
    betas: Array,
    kernel: Any,
    num_particles: int,
    *,
    kernel_params: dict | None = None,
    num_mcmc_steps: int = 1,
    resampling: rs.Scheme = rs.systematic,
    ess_threshold: float = 0.5,
) -> TemperedMoments:
    """Tempered SMC on the geometric path that records ``E`` and ``Var`` of ``log L`` at every
    temperature (the TVO integrand and its derivative).

    Same steps as :func:`kernels.smc.tempering.run`: ``x_0 ~ pi_0``; for ``t = 1..K``
    resample (ESS-triggered), move with ``num_mcmc_steps`` steps invariant for
    ``pi_{beta_{t-1}}``, reweight by ``(beta_t - beta_{t-1}) log L``. The weighted particles
    after the reweighting at ``t`` target ``pi_{beta_t}``; their weighted mean and variance
    of ``log L`` (already computed for the weights: no extra density evaluation) are
    ``moments[t]`` and ``variances[t]``.

    Args:
        key: PRNG key.
        sample_prior_fn: ``key -> x``, a draw from ``pi_0``.
        log_prior_fn: ``x -> log pi_0(x)``.
        log_likelihood_fn: ``x -> log L(x)``.
        betas: ``[K + 1]`` schedule from 0 to 1.
        kernel: BlackJAX-style MCMC move.
        num_particles: ``N``.
        kernel_params: keyword parameters of the kernel step.
        num_mcmc_steps: MCMC steps per temperature.
        resampling: resampling scheme.
        ess_threshold: relative ESS threshold (0: AIS chains, weighted at the end).

    Returns:
        :class:`TemperedMoments`.
    """
    betas = jnp.asarray(betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must be a 1-d schedule from 0 to 1, got shape {betas.shape}")
    move = tempering.mcmc_move(kernel, kernel_params, num_mcmc_steps)
    n = int(num_particles)

    def log_pi(x, beta):
        return log_prior_fn(x) + beta * log_likelihood_fn(x)

    k0, k_steps = jax.random.split(key)
    x0 = jax.vmap(sample_prior_fn)(jax.random.split(k0, n))
    ll0 = jax.vmap(log_likelihood_fn)(x0)
    log_w0 = jnp.full(n, -jnp.log(n), ll0.dtype)
    m0, v0 = _weighted_moments(log_w0, ll0)

    def body(carry, inp):
        x, log_w, log_Z = carry
        k, t = inp
        k_res, k_move = jax.random.split(k)
        x, log_w, _, _ = sequential.resample(k_res, x, log_w, ess_threshold, resampling)
        b_prev = betas[t - 1]
        x = jax.vmap(move, (0, 0, None))(
            jax.random.split(k_move, n), x, lambda z: log_pi(z, b_prev)
        )
        ll = jax.vmap(log_likelihood_fn)(x)
        inc = jnp.where(jnp.isneginf(ll), -jnp.inf, (betas[t] - b_prev) * ll)
        log_w = log_w + inc
        total = jax.nn.logsumexp(log_w)
        log_w = rs.normalize(log_w)
        m, v = _weighted_moments(log_w, ll)
        return (x, log_w, log_Z + total), (m, v, rs.ess(log_w))

    num_steps = betas.shape[0] - 1
    (_, _, log_Z), (ms, vs, es) = jax.lax.scan(
        body,
        (x0, log_w0, jnp.zeros((), ll0.dtype)),
        (jax.random.split(k_steps, num_steps), jnp.arange(1, num_steps + 1)),
    )
    cat = lambda a, b: jnp.concatenate([jnp.asarray(a, b.dtype)[None], b])  # noqa: E731
    return TemperedMoments(betas, cat(m0, ms), cat(v0, vs), log_Z, cat(float(n), es))
