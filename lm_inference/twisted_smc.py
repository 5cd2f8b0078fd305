r"""Twisted SMC over a language model's tokens (Zhao, Brekelmans, Makhzani and Grosse, 2024).

Target: ``sigma(s_{1:T}) ∝ p0(s_{1:T} | prompt) phi(s_{1:T})`` (:class:`lm_inference.Target`).
Intermediate targets ``pi_t(s_{1:t}) ∝ p0(s_{1:t}) psi_t(s_{1:t})`` with twists ``psi_t``
(``psi = 1`` is plain SMC with proposal ``p0``). The twist-induced proposal, computed over the
whole vocabulary in one pass from the LM's logits and a twist that outputs ``log psi_t`` for every
next token at once,

$$q_t(s_t \mid s_{<t}) = \frac{p_0(s_t \mid s_{<t})\, \psi_t(s_{1:t})}
{\sum_{v} p_0(v \mid s_{<t})\, \psi_t(s_{<t}, v)},$$

gives incremental weights that do not depend on the sampled token,

$$w_t = \frac{\sum_v p_0(v \mid s_{<t}) \psi_t(s_{<t}, v)}{\psi_{t-1}(s_{<t})}, \qquad
w_T = \frac{\sum_v p_0(v \mid s_{<T}) \psi_T(s_{<T}, v)}{\psi_{T-1}(s_{<T})}
      \frac{\phi(s_{1:T})}{\psi_T(s_{1:T})},$$

(at the last step the true potential replaces the twist), and
``Z_hat = prod_t (1/N) sum_i w_t^i`` (with resampling when ``ESS < ess_threshold N``) is an
unbiased estimate of ``Z``: ``E[log Z_hat] <= log Z``. With the optimal twists
``psi_t^*(s_{1:t}) = E_{p0}[phi | s_{1:t}]`` every weight equals ``Z`` / ``psi_{t-1}`` ratio
and ``Z_hat = Z`` exactly. ``ess_threshold = 0`` is importance sampling (IWAE bound).
Conditional SMC (``reference`` given) clamps particle 0 to the reference and uses conditional
resampling; with an exact sample from ``sigma`` its ``log Z_hat`` is a stochastic upper bound.

End of sequence: a particle that emitted EOS is complete; it emits EOS as padding, its weight
does not change until the last step where ``phi / psi`` (its carried twist) is applied.

Implementation: one jitted ``lax.scan`` over tokens with the LM and twist parameters as
arguments; the prompt is prefilled once and its KV cache broadcast to the particles; on
resampling the per-particle caches are gathered along the particle axis.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.smc import resampling
from kernels.types import Array, ArrayTree, PRNGKey
from lm_inference.base import broadcast_cache, reorder_cache
from lm_inference.sampling import categorical
from lm_inference.target import Target
from lm_inference.twists import Twist

__all__ = ["SMCResult", "smc", "teacher_force", "TeacherForced"]


class SMCResult(NamedTuple):
    """Output of :func:`smc`.

    Attributes:
        samples: ``[N, T]`` token ids (EOS-padded after the first EOS).
        log_weights: ``[N]`` final unnormalized log weights.
        log_Z: scalar ``log Z_hat``.
        ess: ``[T]`` effective sample size after each step's weighting (before resampling).
        resampled: ``[T]`` whether resampling happened after step ``t`` (never at the last).
        log_potential: ``[N]`` ``log phi`` of the samples.
    """

    samples: Array
    log_weights: Array
    log_Z: Array
    ess: Array
    resampled: Array
    log_potential: Array


def _log_psi(twist, tparams, hidden, tokens, t, n, v):
    if twist is None:
        return jnp.zeros((n, v), jnp.float32)
    return jnp.asarray(twist.apply(tparams, hidden, tokens, t), jnp.float32)


def _nan_to_neginf(x):
    return jnp.where(jnp.isnan(x), -jnp.inf, x)


def _build(target: Target, twist, num_particles: int, scheme, ess_threshold: float, cond: bool):
    lm, T, eos, n = target.lm, target.num_tokens, target.eos, num_particles
    v = lm.vocab_size
    prompt = target.prompt_ids
    plen = int(prompt.shape[0])

    def step(key, out, tokens, t, psi_prev, done, ref_t, tparams):
        logp0 = jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1)
        lpsi = _log_psi(twist, tparams, out.hidden, tokens, t, n, v)
        lq = logp0 + lpsi
        lognorm = jax.nn.logsumexp(lq, axis=-1)
        s = categorical(key, lq)
        if cond:
            s = s.at[0].set(ref_t)
        s = jnp.where(done, eos, s)
        lpsi_s = jnp.take_along_axis(lpsi, s[:, None], axis=1)[:, 0]
        inc = jnp.where(done, 0.0, lognorm - psi_prev)
        psi_new = jnp.where(done, psi_prev, lpsi_s)
        tokens = jax.lax.dynamic_update_slice(tokens, s[:, None], (0, t))
        return tokens, _nan_to_neginf(inc), psi_new, done | (s == eos)

    def sweep(key, params, tparams, reference):
        out, cache = lm.prefill(params, prompt[None], jnp.ones((1, plen), jnp.int32), plen + T)
        cache = broadcast_cache(cache, n)
        out = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), out)
        tokens = jnp.full((n, T), max(eos, 0), jnp.int32)
        psi = jnp.zeros(n, jnp.float32)
        done = jnp.zeros(n, bool)
        log_w = jnp.zeros(n, jnp.float32)
        keys = jax.random.split(key, (T, 2))

        def body(carry, t):
            out, cache, tokens, psi, done, log_w = carry
            k1, k2 = keys[t, 0], keys[t, 1]
            tokens, inc, psi, done = step(k1, out, tokens, t, psi, done, reference[t], tparams)
            log_w = log_w + inc
            ess = resampling.ess(log_w)
            anc, did, log_w = resampling.resample_if(k2, log_w, ess_threshold, scheme)
            tokens, psi, done = tokens[anc], psi[anc], done[anc]
            cache = jax.lax.cond(did, lambda c: reorder_cache(c, anc), lambda c: c, cache)
            out, cache = lm.decode_step(params, tokens[:, t], cache)
            return (out, cache, tokens, psi, done, log_w), (ess, did)

        carry = (out, cache, tokens, psi, done, log_w)
        carry, (ess_hist, did_hist) = jax.lax.scan(body, carry, jnp.arange(T - 1))
        out, cache, tokens, psi, done, log_w = carry
        k = keys[T - 1, 0]
        was_done = done
        tokens, inc, psi_last, done = step(
            k, out, tokens, T - 1, psi, done, reference[T - 1], tparams
        )
        log_phi = jax.vmap(lambda s: target.log_phi(s, params))(tokens)
        # active particles: inc - log psi_T(s); completed earlier: -log psi carried (= psi_last)
        final = inc - psi_last + _nan_to_neginf(log_phi)
        log_w = log_w + _nan_to_neginf(jnp.where(was_done, -psi + log_phi, final))
        log_Z = jax.nn.logsumexp(log_w) - jnp.log(n)
        ess_hist = jnp.concatenate([ess_hist, resampling.ess(log_w)[None]])
        did_hist = jnp.concatenate([did_hist, jnp.zeros(1, bool)])
        return SMCResult(tokens, log_w, log_Z, ess_hist, did_hist, log_phi)

    return jax.jit(sweep)


_SCHEMES = {**resampling.SCHEMES}


def smc(
    key: PRNGKey,
    target: Target,
    num_particles: int,
    twist: Twist | None = None,
    resampling: str | Callable = "systematic",
    ess_threshold: float = 0.5,
    reference: Array | None = None,
    params: ArrayTree | None = None,
) -> SMCResult:
    """Run twisted SMC (module docstring) on ``target``.

    Args:
        key: PRNG key.
        target: the :class:`lm_inference.Target`.
        num_particles: ``N``.
        twist: ``None`` (proposal ``p0``) or a :class:`lm_inference.twists.Twist`
            (``apply(params, hidden [N, H], tokens [N, T], t) -> log psi_t [N, V]``, ``params``).
        resampling: ``"systematic"``, ``"multinomial"``, ``"stratified"``, ``"residual"`` or a
            scheme from :mod:`kernels.smc.resampling`; conditional SMC uses its conditional
            version.
        ess_threshold: resample when ``ESS < ess_threshold * N``; ``1`` every step, ``0`` never
            (importance sampling).
        reference: ``[T]`` token ids for conditional SMC (particle 0 is clamped to them; an
            exact ``sigma`` sample gives an upper bound on ``log Z``).
        params: LM parameters (default ``target.lm.params``).

    Returns:
        :class:`SMCResult`.
    """
    if not isinstance(target, Target):
        raise TypeError(f"smc: target must be an lm_inference.Target, got {type(target).__name__}.")
    if not isinstance(num_particles, int | np.integer) or num_particles < 1:
        raise ValueError(f"smc: num_particles must be a positive int, got {num_particles!r}.")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"smc: ess_threshold must be in [0, 1], got {ess_threshold}.")
    if isinstance(resampling, str):
        if resampling not in _SCHEMES:
            raise ValueError(
                f"smc: unknown resampling {resampling!r}; choose one of {sorted(_SCHEMES)}."
            )
        scheme = _SCHEMES[resampling]
    else:
        scheme = resampling
    cond = reference is not None
    if cond:
        reference = jnp.asarray(reference, jnp.int32)
        if reference.shape != (target.num_tokens,):
            raise ValueError(
                f"smc: reference must have shape [T] = ({target.num_tokens},), got {reference.shape}."
            )
        reference = target.pad_after_eos(reference)
        scheme = _conditional(scheme)
    else:
        reference = jnp.zeros(target.num_tokens, jnp.int32)
    cache_key = (
        twist.apply if twist is not None else None,
        num_particles,
        scheme,
        float(ess_threshold),
        cond,
    )
    fns = target.__dict__.setdefault("_smc_fns", {})
    if cache_key not in fns:
        fns[cache_key] = _build(target, twist, num_particles, scheme, float(ess_threshold), cond)
    params = target.lm.params if params is None else params
    tparams = twist.params if twist is not None else None
    return fns[cache_key](key, params, tparams, reference)


_COND = {}


def _conditional(scheme):
    if scheme not in _COND:
        _COND[scheme] = resampling.conditional(scheme)
    return _COND[scheme]


class TeacherForced(NamedTuple):
    """Per-step quantities along given sequences (see :func:`teacher_force`).

    Attributes:
        log_p0: ``[M, T]`` ``log p0(s_t | s_<t)`` (0 after EOS).
        log_q: ``[M, T]`` ``log q_t(s_t | s_<t)`` under the twist (0 after EOS).
        log_psi: ``[M, T]`` ``log psi_t(s_{1:t})`` (carried after EOS).
        log_norm: ``[M, T]`` ``log sum_v p0(v | s_<t) psi_t(s_<t, v)`` (0 after EOS).
        hidden: ``[M, T, H]`` the LM's hidden state before step ``t``.
        active: ``[M, T]`` whether step ``t`` is at or before the first EOS.
        log_p0_all: ``[M, T, V]`` ``log p0(. | s_<t)`` (for losses that need the normalizer).
        log_phi: ``[M]``.
    """

    log_p0: Array
    log_q: Array
    log_psi: Array
    log_norm: Array
    hidden: Array
    active: Array
    log_p0_all: Array
    log_phi: Array

    def log_weight(self) -> Array:
        """``[M]`` ``log p0(s) + log phi(s) - log q(s)`` (importance weight of the proposal)."""
        return self.log_p0.sum(1) + self.log_phi - self.log_q.sum(1)


def _build_tf(target: Target, twist):
    lm, T, eos = target.lm, target.num_tokens, target.eos
    v = lm.vocab_size
    prompt = target.prompt_ids
    plen = int(prompt.shape[0])

    def tf(params, tparams, seqs):
        m = seqs.shape[0]
        out, cache = lm.prefill(params, prompt[None], jnp.ones((1, plen), jnp.int32), plen + T)
        cache = broadcast_cache(cache, m)
        out = jax.tree.map(lambda x: jnp.broadcast_to(x, (m,) + x.shape[1:]), out)

        def body(carry, t):
            out, cache, done, psi = carry
            s = seqs[:, t]
            logp0 = jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1)
            lpsi = _log_psi(twist, tparams, out.hidden, seqs, t, m, v)
            lognorm = jax.nn.logsumexp(logp0 + lpsi, axis=-1)
            lp0_s = jnp.take_along_axis(logp0, s[:, None], 1)[:, 0]
            lpsi_s = jnp.take_along_axis(lpsi, s[:, None], 1)[:, 0]
            active = ~done
            lp0_s = jnp.where(active, lp0_s, 0.0)
            lq_s = jnp.where(active, lp0_s + lpsi_s - lognorm, 0.0)
            psi = jnp.where(active, lpsi_s, psi)
            hidden = out.hidden
            new_out, cache = lm.decode_step(params, s, cache)
            rec = (lp0_s, lq_s, psi, jnp.where(active, lognorm, 0.0), hidden, active, logp0)
            return (new_out, cache, done | (s == eos), psi), rec

        init = (out, cache, jnp.zeros(m, bool), jnp.zeros(m, jnp.float32))
        _, rec = jax.lax.scan(body, init, jnp.arange(T))
        rec = [jnp.swapaxes(r, 0, 1) for r in rec]
        log_phi = jax.vmap(lambda s: target.log_phi(s, params))(seqs)
        return TeacherForced(*rec, log_phi)

    return jax.jit(tf)


def teacher_force(
    target: Target,
    sequences: Array,
    twist: Twist | None = None,
    params: ArrayTree | None = None,
) -> TeacherForced:
    """Proposal and model log probabilities along given ``[M, T]`` sequences (EOS-padded).

    Used for exact KLs, IWAE bounds with exact samples, and twist training.

    Args:
        target: the target.
        sequences: ``[M, T]`` token ids.
        twist: the twist defining ``q`` (``None``: ``q = p0``).
        params: LM parameters (default ``target.lm.params``).

    Returns:
        :class:`TeacherForced`.
    """
    seqs = jnp.asarray(sequences, jnp.int32)
    if seqs.ndim != 2 or seqs.shape[1] != target.num_tokens:
        raise ValueError(
            f"teacher_force: sequences must be [M, T={target.num_tokens}], got {seqs.shape}."
        )
    seqs = target.pad_after_eos(seqs)
    fns = target.__dict__.setdefault("_tf_fns", {})
    k = twist.apply if twist is not None else None
    if k not in fns:
        fns[k] = _build_tf(target, twist)
    params = target.lm.params if params is None else params
    return fns[k](params, twist.params if twist is not None else None, seqs)
