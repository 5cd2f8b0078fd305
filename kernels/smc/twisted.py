r"""Twisted SMC for discrete sequential targets (Zhao, Brekelmans, Makhzani and Grosse, 2024).

Target over ``T`` tokens ``s_{1:T}`` in a vocabulary of size ``V``:
\(\sigma(s) = p_0(s)\,\phi(s) / Z\), ``p_0(s) = prod_t p_0(s_t | s_{<t})``. Twists
\(\psi_t(s_{1:t})\) approximate the optimal \(\psi_t^*(s_{1:t}) = E_{p_0}[\phi(s) | s_{1:t}]\);
at the last step the true potential replaces the twist, \(\psi_T = \phi\), and ``psi_0 = 1``.
The incremental weight at step ``t`` with proposal ``q_t(s_t | s_{<t})`` is (paper eq. 6)

$$w_t = \frac{p_0(s_t | s_{<t})\,\psi_t(s_{1:t})}{q_t(s_t | s_{<t})\,\psi_{t-1}(s_{1:t-1})}.$$

With the twist-induced proposal ``q_t ∝ p_0 psi_t`` (``proposal="twist"``, computed over the
whole vocabulary in one pass) the weight ``sum_v p_0(v | s_{<t}) psi_t(s_{<t}, v) /
psi_{t-1}(s_{<t})`` does not depend on the sampled token; with exact twists every particle has the
same weight and ``log_Z`` is exact (zero variance). ``proposal="base"`` samples from ``p_0``
(bootstrap); a function ``(tokens, t) -> [V]`` gives any other proposal's logits (e.g. a learned
proposal network), weighted by eq. 6. ``log_twist_fn=None`` means ``psi_t = 1`` for ``t < T``
(plain SMC on ``p_0``); any function of the prefix works, e.g. a learned twist head (see
``lm_inference.twists`` for training by contrastive twist learning).

Conditional SMC: ``reference`` (``[T]`` tokens, an exact draw from ``sigma``) is clamped in
particle 0 and gives an upper-bound estimate (paper sec. 4).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from kernels.smc import resampling as rs
from kernels.smc import sequential
from kernels.types import Array, PRNGKey

__all__ = ["run", "categorical", "sample", "normalize_and_guard"]

_BLOCK = 256


def _inverse_cdf(u: Array, weights: Array) -> Array:
    """The index ``j`` with ``c_{j-1} <= u c_n < c_j`` for ``c = cumsum(weights)`` (last axis).

    The target is kept strictly below the total, so ``weights[j] > 0`` always.
    """
    c = jnp.cumsum(weights, axis=-1)
    total = c[..., -1:]
    t = jnp.minimum(u * total, jnp.nextafter(total, 0.0))
    return jnp.minimum(jnp.sum(c <= t, axis=-1), weights.shape[-1] - 1)


def categorical(key: PRNGKey, logits: Array) -> Array:
    r"""Exact draws from ``softmax(logits)`` along the last axis, by two-level inverse CDF.

    The vocabulary is cut into blocks of 256: a block is chosen with probability proportional to
    its mass, then a token within it, each by inverting a cumulative sum with one uniform. Two
    uniforms per row instead of ``V`` Gumbel variables (``jax.random.categorical``), which on
    CPU costs more than the model's output projection for a 50k vocabulary. Tokens with zero
    probability (``-inf`` logits) are never drawn; NaN counts as ``-inf``; a row with no positive
    mass gives an index in range (callers mark such rows dead, see :func:`normalize_and_guard`).

    Args:
        key: PRNG key.
        logits: ``[..., V]`` unnormalized log-probabilities.

    Returns:
        ``[...]`` int32 indices in ``[0, V)``.
    """
    logits = logits.astype(jnp.float32)
    logits = jnp.where(jnp.isnan(logits), -jnp.inf, logits)
    m = jnp.max(logits, axis=-1, keepdims=True)
    w = jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0))
    w = jnp.where(jnp.isnan(w), 0.0, w)
    v = w.shape[-1]
    nb = -(-v // _BLOCK)
    w = jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, nb * _BLOCK - v)])
    blocks = w.reshape(w.shape[:-1] + (nb, _BLOCK))
    u = jax.random.uniform(key, w.shape[:-1] + (2,))
    b = _inverse_cdf(u[..., :1], blocks.sum(-1))
    inner = jnp.take_along_axis(blocks, b[..., None, None], axis=-2)[..., 0, :]
    j = _inverse_cdf(u[..., 1:], inner)
    return jnp.minimum(b * _BLOCK + j, v - 1).astype(jnp.int32)


def sample(key: PRNGKey, log_q: Array) -> Array:
    """One token per row from the unnormalized twisted proposal ``log q [N, V]``."""
    return categorical(key, log_q)


def normalize_and_guard(
    log_q: Array, tokens: Array, done: Array, pad: int
) -> tuple[Array, Array, Array]:
    """``(log sum_v q(v) [N], dead [N], tokens)`` for the twist-induced proposal's weight.

    A row of ``log q`` with no positive mass (every next token masked, or a NaN proposal) is a
    dead particle: it gets ``log_norm = -inf`` (weight zero) and the token ``pad``; rows already
    ``done`` are never dead.
    """
    lq = jnp.where(jnp.isnan(log_q), -jnp.inf, log_q)
    log_norm = jax.nn.logsumexp(lq, axis=-1)
    log_norm = jnp.where(jnp.isnan(log_norm), -jnp.inf, log_norm)
    dead = ~done & (log_norm == -jnp.inf)
    return log_norm, dead, jnp.where(dead, pad, tokens)


def run(
    key: PRNGKey,
    log_p0_fn: Callable[[Array, Array], Array],
    log_potential_fn: Callable[[Array], Array],
    num_tokens: int,
    vocab_size: int,
    num_particles: int,
    *,
    log_twist_fn: Callable[[Array, Array], Array] | None = None,
    proposal: str | Callable[[Array, Array], Array] = "twist",
    resampling: rs.Scheme = rs.systematic,
    ess_threshold: float = 1.0,
    reference: Array | None = None,
) -> sequential.SMCResult:
    """Twisted SMC over token sequences; jit-compatible.

    Args:
        key: PRNG key.
        log_p0_fn: ``(tokens [T], t) -> [V]`` ``log p_0(s_t = v | s_{<t})`` for the 0-based
            position ``t`` (reads only ``tokens[:t]``).
        log_potential_fn: ``tokens [T] -> log phi(s)`` (scalar).
        num_tokens: ``T``.
        vocab_size: ``V``.
        num_particles: ``N``.
        log_twist_fn: ``(tokens [T], t) -> [V]`` ``log psi_t(s_{<t}, v)`` for ``t < T - 1``;
            ``None`` for no twist.
        proposal: ``"twist"`` (``q ∝ p_0 psi``), ``"base"`` (``q = p_0``), or a function
            ``(tokens [T], t) -> [V]`` of (unnormalized) proposal log probabilities
            ``log q_t(s_t = v | s_{<t})``; it must be finite wherever ``p_0 psi_t > 0``.
        resampling: resampling scheme.
        ess_threshold: relative ESS threshold (1: resample at every step).
        reference: ``[T]`` reference tokens for conditional SMC, or ``None``.

    Returns:
        :class:`kernels.smc.sequential.SMCResult`; ``particles`` is a dict with ``tokens``
        ``[N, T]`` and the last step's per-particle ``log_psi``, ``log_p0`` (and ``log_q``)
        ``[N, V]``.
    """
    custom = callable(proposal)
    if not custom and proposal not in ("twist", "base"):
        raise ValueError(
            f'proposal must be "twist", "base" or a function (tokens, t) -> [V] log q, '
            f"got {proposal!r}"
        )
    T, V = num_tokens, vocab_size

    def log_psi_all(tokens, p):
        def final(_):
            return jax.vmap(lambda v: log_potential_fn(tokens.at[T - 1].set(v)))(
                jnp.arange(V, dtype=tokens.dtype)
            )

        def mid(_):
            if log_twist_fn is None:
                return jnp.zeros(V)
            return log_twist_fn(tokens, p)

        return jax.lax.cond(p == T - 1, final, mid, None)

    def prev_psi(x, p):
        last = x["tokens"][:, jnp.maximum(p - 1, 0)]
        val = jnp.take_along_axis(x["log_psi"], last[:, None], axis=1)[:, 0]
        return jnp.where(p == 0, 0.0, val)

    def init_fn(k, n):
        x = {
            "tokens": jnp.zeros((n, T), jnp.int32),
            "log_psi": jnp.zeros((n, V)),
            "log_p0": jnp.zeros((n, V)),
        }
        return {**x, "log_q": jnp.zeros((n, V))} if custom else x

    def propose_fn(k, x, t):
        p = t - 1
        lp0 = jax.vmap(log_p0_fn, (0, None))(x["tokens"], p)
        lpsi = jax.vmap(log_psi_all, (0, None))(x["tokens"], p)
        out = {"log_psi": lpsi, "log_p0": lp0}
        if custom:
            logits = jax.nn.log_softmax(jax.vmap(proposal, (0, None))(x["tokens"], p), axis=-1)
            out["log_q"] = logits
        else:
            logits = lp0 + lpsi if proposal == "twist" else lp0
        s = categorical(k, logits)
        return {"tokens": x["tokens"].at[:, p].set(s), **out}

    def at_token(a, s):
        return jnp.take_along_axis(a, s[:, None], axis=1)[:, 0]

    def log_weight_fn(xp, x, t):
        p = t - 1
        s = x["tokens"][:, p]
        if custom:  # p_0 psi_t / (q psi_{t-1}), eq. 6
            new = at_token(x["log_p0"] + x["log_psi"] - x["log_q"], s)
        elif proposal == "twist":
            new = normalize_and_guard(x["log_p0"] + x["log_psi"], s, jnp.zeros_like(s, bool), 0)[0]
        else:
            new = at_token(x["log_psi"], s)
        return new - prev_psi(xp, p)

    ref = None
    if reference is not None:
        reference = jnp.asarray(reference, jnp.int32)
        if reference.shape != (T,):
            raise ValueError(
                f"reference must be [num_tokens]={T} tokens, got shape {reference.shape}"
            )
        ref = jnp.broadcast_to(reference, (T + 1, T))

    def clamp_fn(x, ref_t, t):
        return {**x, "tokens": x["tokens"].at[0].set(ref_t)}

    return sequential.run(
        key,
        init_fn,
        propose_fn,
        log_weight_fn,
        T,
        num_particles,
        resampling=resampling,
        ess_threshold=ess_threshold,
        reference=ref,
        clamp_fn=clamp_fn,
    )
