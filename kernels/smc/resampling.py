"""Resampling schemes on log weights, ESS, and ESS-triggered resampling usable under ``jit``.

Every scheme has the signature ``scheme(key, log_weights [N], num_samples) -> ancestors
[num_samples]`` and works from *unnormalized log* weights: it is invariant to a constant offset
(``log_weights - 1e4`` gives the same ancestors) and particles with weight ``-inf`` are never
selected. When *all* weights are ``-inf`` the weights are treated as uniform (the SMC estimate
``log_Z`` is then ``-inf`` anyway, and resampling uniformly keeps the particle system finite).

Unbiasedness: every scheme satisfies ``E[#{k: A_k = i}] = M W_i`` with ``W = softmax(log_w)``
(Douc, Cappe and Moulines, 2005). Systematic, stratified and residual resampling have lower
offspring variance than multinomial; residual is ``floor(M W_i)`` deterministic copies and a
multinomial draw of the remainder.

Conditional schemes (conditional SMC, particle Gibbs; Andrieu, Doucet and Holenstein, 2010)
keep the reference at index 0 (``A_0 = 0``) and draw the other ``M - 1`` ancestors by the
scheme from *all* ``N`` weights. For multinomial this is exactly the conditional law of
multinomial resampling given ``A_0 = 0``; for the other schemes it is the conditional law of the
(unbiased, exchangeable after a random permutation) scheme "one multinomial draw plus the scheme
on the other ``M - 1``", so the conditional-SMC upper bound stays valid for each.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from kernels.types import Array, PRNGKey

__all__ = [
    "normalize",
    "log_ess",
    "ess",
    "multinomial",
    "systematic",
    "stratified",
    "residual",
    "conditional",
    "conditional_multinomial",
    "conditional_systematic",
    "conditional_stratified",
    "conditional_residual",
    "resample_if",
    "SCHEMES",
]

Scheme = Callable[[PRNGKey, Array, int], Array]


def _safe(log_weights: Array) -> Array:
    """Log weights with all ``-inf`` replaced by zeros (uniform), NaN treated as ``-inf``."""
    lw = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    return jnp.where(jnp.all(lw == -jnp.inf), jnp.zeros_like(lw), lw)


def normalize(log_weights: Array) -> Array:
    """Normalized log weights ``log W_i = log w_i - logsumexp(log w)``.

    Args:
        log_weights: ``[N]`` unnormalized log weights (``-inf`` allowed).

    Returns:
        ``[N]`` log weights with ``logsumexp = 0``; uniform ``-log N`` if all are ``-inf``.
    """
    lw = _safe(log_weights)
    return lw - jax.nn.logsumexp(lw)


def log_ess(log_weights: Array) -> Array:
    """Log effective sample size ``log (sum w)^2 / sum w^2`` (0 if all weights are ``-inf``).

    Args:
        log_weights: ``[N]`` unnormalized log weights.

    Returns:
        scalar in ``[0, log N]``.
    """
    lw = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    out = 2 * jax.nn.logsumexp(lw) - jax.nn.logsumexp(2 * lw)
    return jnp.where(jnp.all(lw == -jnp.inf), 0.0, out)


def ess(log_weights: Array) -> Array:
    """Effective sample size ``(sum w)^2 / sum w^2`` in ``[1, N]`` (1 if all are ``-inf``)."""
    return jnp.exp(log_ess(log_weights))


def _inverse_cdf(u: Array, log_weights: Array) -> Array:
    """Indices ``i`` with ``C_{i-1} <= u < C_i`` for ``u`` in [0, 1); never a zero weight."""
    w = jnp.exp(normalize(log_weights))
    cdf = jnp.cumsum(w)
    n = w.shape[0]
    idx = jnp.searchsorted(cdf, u * cdf[-1], side="right")
    last_positive = n - 1 - jnp.argmax(w[::-1] > 0)  # guard u * C_N rounding up to C_N
    return jnp.minimum(idx, last_positive).astype(jnp.int32)


def multinomial(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Multinomial resampling: ``A_k ~ Categorical(W)`` i.i.d.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``, the number of ancestors.

    Returns:
        ``[M]`` int32 ancestor indices, i.i.d. (not sorted).
    """
    u = jax.random.uniform(key, (num_samples,), dtype=log_weights.dtype)
    return _inverse_cdf(u, log_weights)


def systematic(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Systematic resampling: one uniform ``U``, points ``(k + U) / M``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``.

    Returns:
        ``[M]`` int32 ancestors; offspring counts are ``floor(M W_i)`` or ``ceil(M W_i)``.
    """
    u = jax.random.uniform(key, (), dtype=log_weights.dtype)
    return _inverse_cdf(
        (jnp.arange(num_samples, dtype=log_weights.dtype) + u) / num_samples, log_weights
    )


def stratified(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Stratified resampling: independent ``U_k``, points ``(k + U_k) / M``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``.

    Returns:
        ``[M]`` int32 ancestors.
    """
    u = jax.random.uniform(key, (num_samples,), dtype=log_weights.dtype)
    return _inverse_cdf(
        (jnp.arange(num_samples, dtype=log_weights.dtype) + u) / num_samples, log_weights
    )


def residual(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Residual resampling: ``floor(M W_i)`` copies of ``i``, the rest multinomial on the residuals.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``.

    Returns:
        ``[M]`` int32 ancestors.
    """
    w = jnp.exp(normalize(log_weights))
    counts = jnp.floor(num_samples * w)
    counts = jnp.where(jnp.cumsum(counts) <= num_samples, counts, 0.0)  # rounding guard
    n_det = jnp.sum(counts).astype(jnp.int32)
    res = num_samples * w - counts
    log_res = jnp.where(res > 0, jnp.log(jnp.where(res > 0, res, 1.0)), -jnp.inf)
    extra = multinomial(key, log_res, num_samples)
    k = jnp.arange(num_samples)
    det = jnp.searchsorted(jnp.cumsum(counts), k, side="right").astype(jnp.int32)
    det = jnp.minimum(det, w.shape[0] - 1)
    return jnp.where(k < n_det, det, extra[jnp.maximum(k - n_det, 0)])


def conditional(scheme: Scheme) -> Scheme:
    """Conditional version of ``scheme``: ``A_0 = 0``, ``A_{1:M}`` by ``scheme`` on all weights.

    Args:
        scheme: an unconditional scheme.

    Returns:
        ``scheme(key, log_weights, num_samples)`` with ``ancestors[0] == 0``.
    """

    def cond_scheme(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
        if num_samples == 1:
            return jnp.zeros(1, jnp.int32)
        rest = scheme(key, log_weights, num_samples - 1)
        return jnp.concatenate([jnp.zeros(1, jnp.int32), rest])

    cond_scheme.__name__ = f"conditional_{getattr(scheme, '__name__', 'scheme')}"
    cond_scheme.__doc__ = f"Conditional {cond_scheme.__name__[12:]} resampling (ancestors[0] == 0)."
    return cond_scheme


conditional_multinomial = conditional(multinomial)
conditional_systematic = conditional(systematic)
conditional_stratified = conditional(stratified)
conditional_residual = conditional(residual)

SCHEMES = {
    "multinomial": multinomial,
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
}


def resample_if(
    key: PRNGKey,
    log_weights: Array,
    ess_threshold: float | Array,
    scheme: Scheme = systematic,
) -> tuple[Array, Array, Array]:
    """ESS-triggered resampling, pure (``lax.cond``), usable inside ``scan`` under ``jit``.

    Resamples when ``ESS < ess_threshold * N`` (``ess_threshold = 1`` resamples at every step,
    ``0`` never). Resampling preserves the total mass: after resampling every particle gets
    ``logsumexp(log_w) - log N``, so ``logsumexp`` of the returned weights equals the input's
    and a log Z accumulated from weight totals is unchanged by this call.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        ess_threshold: relative threshold in ``[0, 1]``.
        scheme: a (possibly conditional) resampling scheme.

    Returns:
        ``(ancestors [N], resampled (bool scalar), log_weights_after [N])``; ancestors is
        ``arange(N)`` when not resampled.
    """
    n = log_weights.shape[0]
    do = log_ess(log_weights) < jnp.log(ess_threshold * n)
    do = jnp.logical_and(do, ess_threshold > 0) | (ess_threshold >= 1)
    ancestors = jax.lax.cond(
        do,
        lambda k: scheme(k, log_weights, n).astype(jnp.int32),
        lambda k: jnp.arange(n, dtype=jnp.int32),
        key,
    )
    total = jax.nn.logsumexp(log_weights)
    after = jnp.where(do, jnp.full_like(log_weights, total - jnp.log(n)), log_weights)
    return ancestors, do, after
