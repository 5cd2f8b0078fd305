r"""Exact enumeration of a small target (ground truth for tests).

For a vocabulary of ``V`` tokens and ``T`` new tokens, every EOS-padded sequence is enumerated
(at most ``V^T``), with ``log p0``, ``log phi``, the normalized target ``sigma``, ``log Z``, the
optimal twists

$$\psi_t^*(s_{1:t}) = \sum_{s_{t+1:T}} p_0(s_{t+1:T} \mid s_{1:t})\,
\frac{\phi(s_{1:T})}{\Phi_t(s_{1:t})},$$

(``Phi_t`` the potential's prefix value, 1 for a terminal potential)

(as a :class:`lm_inference.twists.Twist` usable by :func:`lm_inference.smc`), exact samples, and
the exact KL divergences of a twisted proposal.
"""

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.types import Array, PRNGKey
from lm_inference.target import Target
from lm_inference.twisted_smc import teacher_force
from lm_inference.twists import Twist

__all__ = ["Enumeration", "enumerate_target", "optimal_twist", "exact_kls", "exact_samples"]


class Enumeration(NamedTuple):
    """All sequences of a target.

    Attributes:
        sequences: ``[M, T]`` every valid (EOS-padded) sequence.
        log_p0: ``[M]``.
        log_phi: ``[M]``.
        log_sigma: ``[M]`` normalized ``log sigma``.
        log_Z: scalar.
        log_p0_steps: ``[M, T]`` per-step ``log p0(s_t | s_<t)``.
        log_prefix: ``[M, T]`` the potential's prefix values ``log Phi_t``.
    """

    sequences: Array
    log_p0: Array
    log_phi: Array
    log_sigma: Array
    log_Z: Array
    log_p0_steps: Array
    log_prefix: Array


def _sequences(v: int, T: int, eos: int | None) -> np.ndarray:
    seqs = np.array(list(itertools.product(range(v), repeat=T)), np.int32).reshape(-1, T)
    if eos is None:
        return seqs
    is_eos = seqs == eos
    after = np.cumsum(is_eos, axis=1) - is_eos > 0
    valid = np.all(~after | is_eos, axis=1)
    return seqs[valid]


def enumerate_target(target: Target, max_sequences: int = 200_000) -> Enumeration:
    """Enumerate ``target`` exactly.

    Args:
        target: a target over a small vocabulary.
        max_sequences: refuse when ``V^T`` exceeds this.

    Returns:
        :class:`Enumeration`.
    """
    v, T = target.lm.vocab_size, target.num_tokens
    if v**T > max_sequences:
        raise ValueError(f"enumerate_target: V^T = {v}^{T} sequences is too many to enumerate.")
    seqs = jnp.asarray(_sequences(v, T, target.eos_token_id))
    tf = teacher_force(target, seqs)
    log_p0 = tf.log_p0.sum(1)
    log_un = log_p0 + tf.log_phi
    log_Z = jax.nn.logsumexp(log_un)
    return Enumeration(seqs, log_p0, tf.log_phi, log_un - log_Z, log_Z, tf.log_p0, tf.log_prefix)


def _code(prefix: np.ndarray, v: int, T: int) -> np.ndarray:
    return (prefix * (v ** np.arange(T - 1, -1, -1))).sum(-1)


def optimal_twist(target: Target, enum: Enumeration | None = None) -> Twist:
    """The optimal twists ``log psi_t^*`` as a lookup-table :class:`Twist` (``t = 1..T``).

    ``psi^*`` at completion is the completion value, so for a potential without ``update``
    increments every SMC weight is constant and ``Z_hat = Z``. Prefixes that no valid sequence
    extends get ``-inf``.
    """
    enum = enumerate_target(target) if enum is None else enum
    v, T = target.lm.vocab_size, target.num_tokens
    seqs = np.asarray(enum.sequences)
    cum = np.cumsum(np.asarray(enum.log_p0_steps, np.float64), axis=1)
    cum = cum + np.asarray(enum.log_prefix, np.float64)
    val = np.asarray(enum.log_p0, np.float64) + np.asarray(enum.log_phi, np.float64)
    table = np.full((T, v**T), -np.inf)
    for t in range(T):
        pref = seqs.copy()
        pref[:, t + 1 :] = 0
        codes = _code(pref, v, T)
        with np.errstate(invalid="ignore"):
            contrib = np.where(val == -np.inf, -np.inf, val - cum[:, t])
        for c in np.unique(codes):
            table[t, c] = np.logaddexp.reduce(contrib[codes == c])
    return table_twist(target, table)


def _table_apply(v: int, T: int):
    powers = jnp.asarray(v ** np.arange(T - 1, -1, -1), jnp.int32)

    def apply(table, hidden, tokens, t):
        keep = jnp.arange(T) < t
        base = jnp.sum(jnp.where(keep, tokens, 0) * powers, axis=-1)
        codes = base[:, None] + jnp.arange(v)[None, :] * powers[t]
        return table[t][codes]

    return apply


_TABLE_APPLY = {}


def table_twist(target: Target, log_psi: Array) -> Twist:
    """A :class:`Twist` from a ``[T, V^T]`` table of ``log psi_t`` indexed by prefix code."""
    key = (target.lm.vocab_size, target.num_tokens)
    if key not in _TABLE_APPLY:
        _TABLE_APPLY[key] = _table_apply(*key)
    return Twist(_TABLE_APPLY[key], jnp.asarray(log_psi, jnp.float32))


def exact_samples(key: PRNGKey, enum: Enumeration, num_samples: int) -> Array:
    """``[num_samples, T]`` i.i.d. draws from ``sigma``."""
    idx = jax.random.categorical(key, enum.log_sigma, shape=(num_samples,))
    return enum.sequences[idx]


def exact_kls(target: Target, twist, enum: Enumeration | None = None) -> tuple[float, float]:
    """Exact ``(KL(q || sigma), KL(sigma || q))`` of the twist-induced proposal ``q``.

    ``q`` is the product of the per-step proposals (without resampling), the distribution
    whose importance weights define the KL intervals.
    """
    enum = enumerate_target(target) if enum is None else enum
    log_q = np.asarray(teacher_force(target, enum.sequences, twist).log_q.sum(1), np.float64)
    log_s = np.asarray(enum.log_sigma, np.float64)
    q = np.exp(log_q)
    s = np.exp(log_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_qs = float(np.sum(np.where(q > 0, q * (log_q - log_s), 0.0)))
        kl_sq = float(np.sum(np.where(s > 0, s * (log_s - log_q), 0.0)))
    return kl_qs, kl_sq
