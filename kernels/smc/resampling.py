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
keep the reference at index 0 (``A_0 = 0``) and draw the other ``M - 1`` ancestors from the
conditional law, given ``A_0 = 0``, of an exchangeable version of the scheme (particles and
offspring randomly permuted, which leaves ``Z_hat`` unchanged in law): i.i.d. draws for
multinomial; a point uniform in the reference's interval of a randomly permuted CDF for
systematic and stratified (Chopin and Singh, 2015); a deterministic copy with probability
``floor(M W_0) / (M W_0)`` for residual. With these, conditional SMC from an exact target draw
satisfies ``E[1 / Z_hat] = 1 / Z`` exactly (tests/kernels/smc/test_enumeration.py enumerates the
extended space). Dropping the permutation, or drawing the others by the plain scheme on
``M - 1`` points, breaks the identity.

BlackJAX's resampling functions have the same names and positional signature but take
*normalized probabilities* (``blackjax.tempered_smc`` calls ``resampling_fn(key, state.weights,
N)``). Read as log weights, probabilities resample almost uniformly (``softmax(W)`` is within a
factor ``e`` of uniform), so :func:`multinomial`, :func:`systematic`, :func:`stratified` and
:func:`residual` refuse input that is a probability vector: non-negative, summing to 1 up to
rounding (``|sum - 1| <= 16 N eps_float32``) and not constant (for constant input both readings
agree). Concrete input raises :class:`ProbabilityWeightsError`; under ``jit``/``vmap``/``scan``
the check runs on the device and the host callback (only when it fires; under ``vmap`` once for
the batch) raises the same message. For BlackJAX pass :func:`for_blackjax(systematic)
<for_blackjax>`; log weights that really are such a vector can be shifted by any constant (the
schemes are invariant to it) or passed with ``check=False``.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from kernels.types import Array, PRNGKey

__all__ = [
    "ProbabilityWeightsError",
    "for_blackjax",
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
    "should_resample",
    "resample_if",
    "unchecked",
    "SCHEMES",
]

Scheme = Callable[[PRNGKey, Array, int], Array]


class ProbabilityWeightsError(ValueError):
    """A scheme on log weights was given normalized probabilities (BlackJAX's convention)."""


def _probability_message(name: str) -> str:
    return (
        f"kernels.smc.resampling.{name} takes unnormalized LOG weights, but was given a "
        "probability vector (non-negative, summing to 1): BlackJAX's convention, e.g. "
        "blackjax.tempered_smc calls resampling_fn(key, state.weights, N) with normalized "
        "weights. Read as log weights these would resample almost uniformly. For BlackJAX pass "
        f"kernels.smc.resampling.for_blackjax(kernels.smc.resampling.{name}) (or "
        f"blackjax.smc.resampling.{name}); if these really are log weights, shift them by a "
        f"constant (the scheme is invariant to it) or call {name}(key, log_weights, n, "
        "check=False)."
    )


def _looks_like_probabilities(w: Array) -> Array:
    """Bool scalar: ``w`` is a non-constant probability vector (up to float32 rounding)."""
    n = w.shape[0]
    tol = 16 * n * float(jnp.finfo(jnp.float32).eps)
    finite = jnp.all(jnp.isfinite(w))
    in_unit = jnp.all((w >= 0) & (w <= 1))
    sums_to_one = jnp.abs(jnp.sum(w) - 1) <= tol
    not_constant = jnp.max(w) > jnp.min(w)
    return finite & in_unit & sums_to_one & not_constant


def _raise_if(flag, name: str) -> None:
    import numpy as np

    if np.any(flag):
        raise ProbabilityWeightsError(_probability_message(name))


def _host_check(flag, name: str):
    _raise_if(flag, name)
    import numpy as np

    return np.zeros(np.shape(flag), np.int32)


def _check_log_weights(log_weights: Array, name: str) -> Array:
    """Refuse a probability vector where log weights are expected: eager input raises; traced
    input gets a device-side check whose host callback runs only when it fires (under ``vmap``
    once per call, for the whole batch: ``vmap_method="expand_dims"``; a per-element callback
    made a 4000-run vmap compile in 113 s instead of 0.6 s). Returns an int32 zero that the
    scheme adds to its ancestors, so the check is not dead code."""
    zero = jnp.zeros((), jnp.int32)
    if log_weights.ndim != 1 or log_weights.shape[0] < 2:
        return zero
    flag = _looks_like_probabilities(log_weights)
    if not isinstance(flag, jax.core.Tracer):
        _raise_if(flag, name)
        return zero
    shape = jax.ShapeDtypeStruct((), jnp.int32)
    return jax.lax.cond(
        flag,
        lambda f: jax.pure_callback(
            functools.partial(_host_check, name=name), shape, f, vmap_method="expand_dims"
        ),
        lambda f: zero,
        flag,
    )


def for_blackjax(scheme: "Scheme") -> "Scheme":
    """``scheme`` on BlackJAX's convention: ``f(key, weights [N], num_samples)`` with
    normalized probabilities ``weights`` (as ``blackjax.tempered_smc`` passes them).

    Args:
        scheme: a scheme of this module (on log weights).

    Returns:
        the same resampling law, taking probabilities (zeros allowed, never selected).
    """

    def on_weights(key: PRNGKey, weights: Array, num_samples: int) -> Array:
        w = jnp.asarray(weights)
        log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
        return unchecked(scheme)(key, log_w, num_samples)

    on_weights.__name__ = f"{getattr(scheme, '__name__', 'scheme')}_on_weights"
    on_weights.__doc__ = f"{on_weights.__name__[:-11]} resampling on normalized probabilities."
    return on_weights


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
    return _inverse_cdf_w(u, jnp.exp(normalize(log_weights)))


def _inverse_cdf_w(u: Array, w: Array) -> Array:
    cdf = jnp.cumsum(w)
    n = w.shape[0]
    idx = jnp.searchsorted(cdf, u * cdf[-1], side="right")
    last_positive = n - 1 - jnp.argmax(w[::-1] > 0)  # guard u * C_N rounding up to C_N
    return jnp.minimum(idx, last_positive).astype(jnp.int32)


def multinomial(key: PRNGKey, log_weights: Array, num_samples: int, *, check: bool = True) -> Array:
    """Multinomial resampling: ``A_k ~ Categorical(W)`` i.i.d.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``, the number of ancestors.
        check: refuse a probability vector (BlackJAX's convention; see the module
            docstring).

    Returns:
        ``[M]`` int32 ancestor indices, i.i.d. (not sorted).
    """
    ok = _check_log_weights(log_weights, "multinomial") if check else 0
    u = jax.random.uniform(key, (num_samples,), dtype=log_weights.dtype)
    return _inverse_cdf(u, log_weights) + ok


def systematic(key: PRNGKey, log_weights: Array, num_samples: int, *, check: bool = True) -> Array:
    """Systematic resampling: one uniform ``U``, points ``(k + U) / M``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``.
        check: refuse a probability vector (BlackJAX's convention; see the module
            docstring).

    Returns:
        ``[M]`` int32 ancestors; offspring counts are ``floor(M W_i)`` or ``ceil(M W_i)``.
    """
    ok = _check_log_weights(log_weights, "systematic") if check else 0
    u = jax.random.uniform(key, (), dtype=log_weights.dtype)
    return _grid_from(u, log_weights, num_samples) + ok


def stratified(key: PRNGKey, log_weights: Array, num_samples: int, *, check: bool = True) -> Array:
    """Stratified resampling: independent ``U_k``, points ``(k + U_k) / M``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``.
        check: refuse a probability vector (BlackJAX's convention; see the module
            docstring).

    Returns:
        ``[M]`` int32 ancestors.
    """
    ok = _check_log_weights(log_weights, "stratified") if check else 0
    u = jax.random.uniform(key, (num_samples,), dtype=log_weights.dtype)
    return _grid_from(u, log_weights, num_samples) + ok


def _grid_from(u: Array, log_weights: Array, num_samples: int) -> Array:
    """Ancestors of the points ``(k + u_k) / M``: systematic (scalar ``u``) or stratified."""
    k = jnp.arange(num_samples, dtype=log_weights.dtype)
    return _inverse_cdf((k + u) / num_samples, log_weights)


def residual(key: PRNGKey, log_weights: Array, num_samples: int, *, check: bool = True) -> Array:
    """Residual resampling: ``floor(M W_i)`` copies of ``i``, the rest multinomial on the residuals.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights.
        num_samples: ``M``.
        check: refuse a probability vector (BlackJAX's convention; see the module
            docstring).

    Returns:
        ``[M]`` int32 ancestors.
    """
    ok = _check_log_weights(log_weights, "residual") if check else 0
    u = jax.random.uniform(key, (num_samples,), dtype=log_weights.dtype)
    return _residual_from(u, log_weights, num_samples) + ok


def _residual_from(u: Array, log_weights: Array, num_samples: int) -> Array:
    """Residual resampling from ``M`` uniforms (multinomial draws of the residuals)."""
    _, _, n_det, log_res, det = _residual_parts(log_weights, num_samples)
    extra = _inverse_cdf(u, log_res)
    k = jnp.arange(num_samples)
    return jnp.where(k < n_det, det, extra[jnp.maximum(k - n_det, 0)])


def _conditional_multinomial_from(u: Array, log_weights: Array, num_samples: int) -> Array:
    """Conditional multinomial from ``num_samples - 1`` uniforms ``u``."""
    rest = _inverse_cdf(u, log_weights)
    return jnp.concatenate([jnp.zeros(1, jnp.int32), rest])


def _reference_slot(perm: Array, u: Array, log_weights: Array, num_samples: int):
    """Systematic/stratified helper: a point ``V`` uniform in particle 0's interval of the CDF
    taken in the order ``perm``; returns ``(W[perm], k*, U)`` with ``M V = k* + U``."""
    w = jnp.exp(normalize(log_weights))[perm]
    cdf = jnp.cumsum(w)
    pos = jnp.argmax(perm == 0)
    hi = cdf[pos]
    lo = jnp.where(pos > 0, cdf[jnp.maximum(pos - 1, 0)], 0.0)
    s = num_samples * (lo + u * (hi - lo)) / cdf[-1]
    k_star = jnp.clip(jnp.floor(s), 0, num_samples - 1)
    return w, k_star.astype(jnp.int32), jnp.clip(s - k_star, 0.0, 1.0)


def _assemble(perm: Array, w: Array, points: Array, k_star: Array) -> Array:
    """Ancestors of ``points`` (in ``[0, 1)``) under the weights ``w`` in the order ``perm``,
    with the one of point ``k*`` (particle 0) moved to slot 0."""
    anc = perm[_inverse_cdf_w(points, w)].astype(jnp.int32)
    k = jnp.arange(points.shape[0] - 1)
    rest = anc[k + (k >= k_star)]
    return jnp.concatenate([jnp.zeros(1, jnp.int32), rest])


def _conditional_systematic_from(
    perm: Array, u: Array, log_weights: Array, num_samples: int
) -> Array:
    """Conditional systematic from an input permutation ``perm`` and one uniform ``u``."""
    w, k_star, U = _reference_slot(perm, u, log_weights, num_samples)
    points = (jnp.arange(num_samples, dtype=w.dtype) + U) / num_samples
    return _assemble(perm, w, points, k_star)


def _conditional_stratified_from(
    perm: Array, u: Array, us: Array, log_weights: Array, num_samples: int
) -> Array:
    """Conditional stratified from ``perm``, ``u`` (the reference's point) and ``M`` uniforms
    ``us`` for the other strata."""
    w, k_star, U = _reference_slot(perm, u, log_weights, num_samples)
    k = jnp.arange(num_samples)
    offsets = jnp.where(k == k_star, U, us.astype(w.dtype))
    return _assemble(perm, w, (k + offsets) / num_samples, k_star)


def _residual_parts(log_weights: Array, num_samples: int):
    w = jnp.exp(normalize(log_weights))
    counts = jnp.floor(num_samples * w)
    counts = jnp.where(jnp.cumsum(counts) <= num_samples, counts, 0.0)  # rounding guard
    n_det = jnp.sum(counts).astype(jnp.int32)
    res = num_samples * w - counts
    log_res = jnp.where(res > 0, jnp.log(jnp.where(res > 0, res, 1.0)), -jnp.inf)
    k = jnp.arange(num_samples)
    det = jnp.searchsorted(jnp.cumsum(counts), k, side="right").astype(jnp.int32)
    det = jnp.minimum(det, w.shape[0] - 1)
    return w, counts, n_det, log_res, det


def _conditional_residual_from(b: Array, us: Array, log_weights: Array, num_samples: int) -> Array:
    """Conditional residual from a uniform ``b`` (is the reference a deterministic copy?) and
    ``M`` uniforms ``us`` for the multinomial draws of the residuals."""
    w, counts, n_det, log_res, det = _residual_parts(log_weights, num_samples)
    p_det = jnp.where(w[0] > 0, counts[0] / (num_samples * jnp.where(w[0] > 0, w[0], 1.0)), 0.0)
    offset = (b < p_det).astype(jnp.int32)  # drop one deterministic copy of particle 0
    extra = _inverse_cdf(us, log_res)
    j = jnp.arange(num_samples - 1) + offset
    rest = jnp.where(
        j < n_det, det[jnp.minimum(j, num_samples - 1)], extra[jnp.maximum(j - n_det, 0)]
    )
    return jnp.concatenate([jnp.zeros(1, jnp.int32), rest.astype(jnp.int32)])


def conditional_multinomial(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Conditional multinomial resampling: ``A_0 = 0``, ``A_{1:M-1} ~ Categorical(W)`` i.i.d.

    The exact conditional law of multinomial resampling given ``A_0 = 0``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights (particle 0 is the reference).
        num_samples: ``M``.

    Returns:
        ``[M]`` int32 ancestors with ``ancestors[0] == 0``.
    """
    u = jax.random.uniform(key, (num_samples - 1,), dtype=log_weights.dtype)
    return _conditional_multinomial_from(u, log_weights, num_samples)


def conditional_systematic(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Conditional systematic resampling (``A_0 = 0``).

    The conditional law, given that slot 0 descends from particle 0, of the exchangeable
    systematic scheme "randomly permute the particles, resample systematically, randomly
    permute the offspring": draw the permutation ``pi``, a point ``V`` uniform in particle 0's
    interval of the permuted CDF, set ``k* = floor(M V)``, ``U = M V - k*``; the other
    ancestors are those of the points ``(k + U) / M``, ``k != k*`` (Chopin and Singh, 2015).
    The permutation matters: without it the identity ``E[1 / Z_hat] = 1 / Z`` of conditional
    SMC fails for ``N >= 4`` (checked by exhaustive enumeration in the tests).

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights (particle 0 is the reference).
        num_samples: ``M``.

    Returns:
        ``[M]`` int32 ancestors with ``ancestors[0] == 0``.
    """
    k1, k2 = jax.random.split(key)
    perm = jax.random.permutation(k1, log_weights.shape[0])
    u = jax.random.uniform(k2, (), dtype=log_weights.dtype)
    return _conditional_systematic_from(perm, u, log_weights, num_samples)


def conditional_stratified(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Conditional stratified resampling (``A_0 = 0``).

    As :func:`conditional_systematic` (random input permutation, the reference's point ``V``
    uniform in particle 0's interval, ``k* = floor(M V)``), with independent uniforms in the
    other strata ``(k + U_k) / M``, ``k != k*``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights (particle 0 is the reference).
        num_samples: ``M``.

    Returns:
        ``[M]`` int32 ancestors with ``ancestors[0] == 0``.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    perm = jax.random.permutation(k1, log_weights.shape[0])
    u = jax.random.uniform(k2, (), dtype=log_weights.dtype)
    us = jax.random.uniform(k3, (num_samples,), dtype=log_weights.dtype)
    return _conditional_stratified_from(perm, u, us, log_weights, num_samples)


def conditional_residual(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
    """Conditional residual resampling (``A_0 = 0``).

    Residual resampling makes ``floor(M W_i)`` deterministic copies and ``R = M - sum floor``
    multinomial draws from the residuals. Given that slot 0 descends from particle 0, it is one
    of the deterministic copies with probability ``floor(M W_0) / (M W_0)``: then the others are
    the remaining copies and ``R`` residual draws; otherwise all copies and ``R - 1`` draws.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalized log weights (particle 0 is the reference).
        num_samples: ``M``.

    Returns:
        ``[M]`` int32 ancestors with ``ancestors[0] == 0``.
    """
    k1, k2 = jax.random.split(key)
    b = jax.random.uniform(k1, (), dtype=log_weights.dtype)
    us = jax.random.uniform(k2, (num_samples,), dtype=log_weights.dtype)
    return _conditional_residual_from(b, us, log_weights, num_samples)


def conditional(scheme: Scheme) -> Scheme:
    """Conditional version of ``scheme`` (conditional SMC): ``ancestors[0] == 0``.

    The four built-in schemes map to their exact conditional laws
    (:func:`conditional_multinomial`, :func:`conditional_systematic`,
    :func:`conditional_stratified`, :func:`conditional_residual`), for which conditional SMC
    satisfies ``E[1 / Z_hat] = 1 / Z``. Any other scheme gets ``A_0 = 0`` and
    ``scheme(key, log_weights, M - 1)`` for the rest, which is its exact conditional law only
    when the scheme draws its ancestors i.i.d. given the weights (as multinomial does).

    Args:
        scheme: an unconditional scheme.

    Returns:
        ``scheme(key, log_weights, num_samples)`` with ``ancestors[0] == 0``.
    """
    if scheme in _CONDITIONAL:
        return _CONDITIONAL[scheme]
    if scheme in _CONDITIONAL.values():
        return scheme

    def cond_scheme(key: PRNGKey, log_weights: Array, num_samples: int) -> Array:
        if num_samples == 1:
            return jnp.zeros(1, jnp.int32)
        rest = unchecked(scheme)(key, log_weights, num_samples - 1)
        return jnp.concatenate([jnp.zeros(1, jnp.int32), rest.astype(jnp.int32)])

    cond_scheme.__name__ = f"conditional_{getattr(scheme, '__name__', 'scheme')}"
    cond_scheme.__doc__ = f"Conditional {cond_scheme.__name__[12:]} resampling (ancestors[0] == 0)."
    return cond_scheme


_CONDITIONAL = {
    multinomial: conditional_multinomial,
    systematic: conditional_systematic,
    stratified: conditional_stratified,
    residual: conditional_residual,
}

_CHECKED = (multinomial, systematic, stratified, residual)
_UNCHECKED = {s: functools.partial(s, check=False) for s in _CHECKED}


def unchecked(scheme: Scheme) -> Scheme:
    """``scheme`` without the probability-vector check, for drivers that compute the log
    weights themselves (every driver of this package: :func:`resample_if`,
    :func:`kernels.smc.sequential.resample`, conditional schemes). The check exists for callers
    outside this package (BlackJAX); inside ``vmap`` its host callback costs more compile time
    than the SMC run it guards (a 4000-run vmapped LM sweep: 73 s against 1.7 s), and a driver
    cannot pass probabilities by mistake."""
    return _UNCHECKED.get(scheme, scheme)

SCHEMES = {
    "multinomial": multinomial,
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
}


def should_resample(log_weights: Array, ess_threshold: float | Array) -> Array:
    """``ESS < ess_threshold * N`` (always for a threshold >= 1, never for 0); bool scalar."""
    n = log_weights.shape[0]
    do = log_ess(log_weights) < jnp.log(ess_threshold * n)
    return jnp.logical_and(do, ess_threshold > 0) | (ess_threshold >= 1)


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
    do = should_resample(log_weights, ess_threshold)
    ancestors = jax.lax.cond(
        do,
        lambda k: unchecked(scheme)(k, log_weights, n).astype(jnp.int32),
        lambda k: jnp.arange(n, dtype=jnp.int32),
        key,
    )
    total = jax.nn.logsumexp(log_weights)
    after = jnp.where(do, jnp.full_like(log_weights, total - jnp.log(n)), log_weights)
    return ancestors, do, after
