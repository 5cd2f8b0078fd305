r"""Twisted SMC over token sequences (Zhao, Brekelmans, Makhzani and Grosse, 2024): the one
step function of the project.

A *sequence model* (:class:`SequenceModel`: ``prefill`` a prompt, then ``decode_step`` one token
at a time, giving the next-token logits; a Hugging Face LM with its KV cache, or a function of
the prefix, :func:`run`) defines ``p0(s_{1:T} | prompt)``. The target is
``sigma(s) ∝ p0(s) phi(s)`` with a stateful potential (:class:`kernels.smc.potential.Potential`):
at step ``t`` it gives the log weight of every next token ``w^next_t [V]`` (e.g. a regex mask),
an increment ``w^upd_t`` once the token is drawn, and a value ``c`` at completion (EOS or the
last token). Intermediate targets

$$\pi_t(s_{1:t}) \propto p_0(s_{1:t})\, \Phi_t(s_{1:t})\, \psi_t(s_{1:t}),$$

with the potential's prefix value ``Phi_t`` and a twist ``psi_t`` (``psi = 1``: no twist). The
default proposal is computed over the whole vocabulary in one pass,

$$q_t(v \mid s_{<t}) \propto p_0(v \mid s_{<t})\, e^{w^{next}_t(v)}\,
\frac{\psi_t(s_{<t}, v)}{\psi_{t-1}(s_{<t})},$$

with incremental weight ``w_t = log sum_v p0 e^{w^next} psi_t / psi_{t-1} + w^upd_t`` (paper
eq. 6 with the twist-induced proposal; another proposal ``q`` gives
``w_t = log p0 e^{w^next} psi_t / (q psi_{t-1}) + w^upd_t`` at the drawn token). The potential's
value at completion replaces the twist in the last weight, ``+ c - log psi_tau`` (a particle
complete at ``tau < T`` keeps ``p0 Phi psi_tau`` as its intermediate target until then, so
finished and unfinished particles are compared on the same footing). So
``Z_hat = prod_t (1/N) sum_i w_t^i`` (resampling when ``ESS < ess_threshold N``) is unbiased for
``Z`` (``E[log Z_hat] <= log Z``), and with the optimal twists
``psi_t^* = E_{p0}[Phi_tau e^c / Phi_t | s_{1:t}]`` of a potential without ``w^upd`` every weight
is equal and ``Z_hat = Z`` exactly. ``ess_threshold = 0`` is importance sampling. Conditional SMC
(``reference``) clamps particle 0 to the reference and uses conditional resampling; with an exact
sample of ``sigma`` its ``log Z_hat`` is a stochastic upper bound (paper sec. 4).

The twist is ``None``, a function ``(params, out, tokens [N, T], t) -> log psi_t [N, V]`` of the
model's output before step ``t`` (e.g. a learned head on an LM's hidden state), or a
:class:`~kernels.smc.potential.Potential` used as a *critic* (genlm-control's term): its prefix
value is the twist, its state is carried like the target's, and the weights correct for it
exactly, so the target stays ``p0 phi``.

A particle whose every next token has weight zero, or whose prefix value becomes zero, is dead:
weight ``-inf``, it emits EOS padding and is never resampled. When all die, ``log_Z = -inf``.

:class:`Sweep` holds the step (``init``, ``propose``, ``advance``, ``forced``, ``finish``,
``reorder``, ``decode``); :func:`build_smc` scans it into an SMC run and
:func:`build_teacher_force` into the per-step quantities along given sequences (exact
enumeration, bounds with exact samples, twist training). ``lm_inference.smc`` and :func:`run`
are both these two functions.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from kernels.smc import resampling as rs
from kernels.smc.potential import Potential, PotentialError, as_potential
from kernels.smc.sequential import broadcast, gather
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = [
    "SequenceModel",
    "SweepState",
    "SMCResult",
    "TeacherForced",
    "Sweep",
    "build_smc",
    "build_teacher_force",
    "check_flags",
    "run",
    "categorical",
    "sample",
    "normalize_and_guard",
]

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
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
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


class SequenceModel(Protocol):
    """What the sweep needs of ``p0``: next-token logits after a prompt and after each token.

    ``out.logits`` is ``[N, V]`` (other fields of ``out``, e.g. an LM's hidden state, are passed
    to a twist function); ``state`` is a pytree with a leading particle axis (a KV cache),
    gathered on resampling. Hugging Face LMs of :mod:`lm_inference` satisfy it.

    Optional hooks: ``broadcast_state(state, n, prompt_length)`` (default: repeat every leaf of
    the batch-1 prefill state ``n`` times) and ``reorder_state(state, ancestors)`` (default:
    gather every leaf), e.g. to keep one shared copy of the prompt's KV cache.
    """

    vocab_size: int

    def prefill(
        self, params: ArrayTree, token_ids: Array, attention_mask: Array, max_length: int
    ) -> tuple[Any, ArrayTree]: ...

    def decode_step(self, params: ArrayTree, tokens: Array, state: ArrayTree) -> tuple[Any, ArrayTree]: ...


class SMCResult(NamedTuple):
    """Output of a twisted SMC run (:func:`build_smc`, :func:`run`, ``lm_inference.smc``).

    Attributes:
        samples: ``[N, T]`` token ids (EOS-padded after the first EOS).
        log_weights: ``[N]`` final unnormalized log weights (``-inf``: dead particle).
        log_Z: scalar ``log Z_hat`` (``-inf`` when every particle died).
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


class TeacherForced(NamedTuple):
    """Per-step quantities along given sequences (:func:`build_teacher_force`).

    Attributes:
        log_p0: ``[M, T]`` ``log p0(s_t | s_<t)`` (0 after completion).
        log_q: ``[M, T]`` ``log q_t(s_t | s_<t)`` under the twist and the potential's next-token
            weights (0 after completion).
        log_psi: ``[M, T]`` ``log psi_t(s_{1:t})`` (carried after completion).
        log_norm: ``[M, T]`` ``log sum_v p0(v | s_<t) e^{w^next(v)} psi_t(s_<t, v)`` (0 after
            completion).
        hidden: ``[M, T, ...]`` the model output's ``hidden`` field before step ``t`` (``[M, T,
            0]`` when the model has none).
        active: ``[M, T]`` whether step ``t`` is at or before completion.
        log_p0_all: ``[M, T, V]`` ``log p0(. | s_<t)`` (for losses that need the normalizer).
        log_phi: ``[M]`` ``log phi(s)`` (with a forced EOS, ``log p0(EOS | s)`` is included).
        log_prefix: ``[M, T]`` ``log Phi_t``, the potential's prefix value after step ``t``
            (without the completion value; ``log_phi`` is the total).
    """

    log_p0: Array
    log_q: Array
    log_psi: Array
    log_norm: Array
    hidden: Array
    active: Array
    log_p0_all: Array
    log_phi: Array
    log_prefix: Array

    def log_weight(self) -> Array:
        """``[M]`` ``log p0(s) + log phi(s) - log q(s)`` (importance weight of the proposal)."""
        return self.log_p0.sum(1) + self.log_phi - self.log_q.sum(1)


class SweepState(NamedTuple):
    """The particles between steps (every leaf has a leading particle axis ``N``)."""

    out: Any  # the model's output before the next token (``.logits [N, V]``)
    cache: ArrayTree  # the model's state (KV cache)
    tokens: Array  # [N, T]
    done: Array  # [N] complete (EOS, last token) or dead
    log_w: Array  # [N]
    log_phi: Array  # [N] log prefix value of the potential (without the completion value)
    log_c: Array  # [N] completion value (0 until complete)
    log_defer: Array  # [N] the EOS step's factor, deferred to the end (``defer_eos``)
    log_psi: Array  # [N] log twist value of the current prefix
    pstate: ArrayTree  # potential state
    tstate: ArrayTree  # critic state (a Potential used as twist)
    bad: Array  # [4] bool flags, see :func:`check_flags`


_FLAGS = (
    "returned NaN (a log weight must be a float in [-inf, inf); map undefined values to -inf)",
    "returned +inf (phi must be finite; an unbounded potential gives log_Z = inf)",
    "(a twist) returned +inf",
    "(the proposal) gave probability zero to a token it drew, or was NaN: a proposal must be "
    "positive wherever p0 e^{w^next} psi is",
)


def check_flags(bad: Array, potential: str, twist: str = "twist") -> None:
    """Raise :class:`PotentialError` for the first flag set in ``bad [..., 4]`` (of any run)."""
    import numpy as np

    bad = np.asarray(bad)
    if bad.ndim > 1:
        bad = bad.any(axis=tuple(range(bad.ndim - 1)))
    for i, msg in enumerate(_FLAGS):
        if bad[i]:
            who = {2: twist, 3: "proposal"}.get(i, potential)
            raise PotentialError(f"potential {who!r} {msg}.")


def _neginf_nan(x):
    return jnp.where(jnp.isnan(x), -jnp.inf, x)


def _select(mask, new, old):
    """Per-particle ``where(mask, new, old)`` over a pytree with a leading particle axis."""

    def sel(a, b):
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(sel, new, old)


def _at(x, s):
    return jnp.take_along_axis(x, s[:, None], axis=1)[:, 0]


def _float():
    return jnp.result_type(float)


class Sweep:
    """The step function of twisted SMC for one configuration (module docstring).

    Args:
        model: the :class:`SequenceModel` ``p0``.
        num_tokens: ``T``.
        eos: the EOS token id (``-1``: none; a sequence is then complete after ``T`` tokens).
        potential: a :class:`~kernels.smc.potential.Potential` (or ``None``: ``phi = 1``).
        twist: ``None``, ``(params, out, tokens [N, T], t) -> log psi_t [N, V]``, or a
            Potential used as a critic.
        forced_eos: complete every particle still active after ``T`` tokens with an EOS whose
            ``p0(EOS | s)`` enters the weight (genlm-control's ``max_tokens``).
        defer_eos: apply the EOS step's factor (``p0(EOS) e^{w^next(EOS)}``, the twist ratio
            and ``w^upd``) at the end of the sweep; until then a finished particle's
            intermediate weight is ``1 / q(EOS)``, the footing of one that continues. The final
            weights are the same.
        proposal: ``None`` (the twist-induced proposal) or ``(out, tokens [N, T], t) -> [N, V]``
            unnormalized proposal logits (positive wherever ``p0 e^{w^next} psi_t`` is).
        constrain: ``None`` or ``(state, replicated) -> state``, a sharding constraint applied to
            the :class:`SweepState` after the prefill and after every step (e.g.
            ``lm_inference.sharding.particle_constraint``); ``replicated`` names the fields to
            replicate (the log weights and the flags). It changes placement, not values.
    """

    def __init__(
        self,
        model: SequenceModel,
        num_tokens: int,
        eos: int = -1,
        potential: Potential | None = None,
        twist: Callable | Potential | None = None,
        forced_eos: bool = False,
        defer_eos: bool = False,
        proposal: Callable | None = None,
        constrain: Callable | None = None,
    ):
        self.model, self.T, self.eos = model, int(num_tokens), int(eos)
        self.v = int(model.vocab_size)
        self.pot = potential
        self.forced_eos = bool(forced_eos)
        self.critic = isinstance(twist, Potential)
        self.twist = twist
        self.defer_eos = bool(defer_eos)
        self.proposal = proposal
        self.pad = max(self.eos, 0)
        self._constrain = constrain

    def constrain(self, c: SweepState) -> SweepState:
        """``c`` under the sharding constraint (identity without one)."""
        if self._constrain is None:
            return c
        return self._constrain(c, ("log_w", "bad"))

    # -- potential / twist outputs, checked ---------------------------------------------------
    def _checked(self, x, shape, what, pot):
        """``x`` as a float array after checking (at trace time) that it is ``shape`` float."""
        if x is None:
            return None
        per = shape if pot.batched else shape[1:]
        want = "a scalar float log weight" if len(shape) == 1 else f"float log weights {list(shape[1:])}"
        if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
            got = "None" if x is None else str(getattr(x, "dtype", type(x).__name__))
            raise PotentialError(
                f"potential {pot.name!r}: {what} returned {got}, expected {want} per particle "
                "(map a bool indicator to 0.0 / -inf, e.g. jnp.where(ok, 0.0, -jnp.inf))."
            )
        if tuple(x.shape) != shape:
            got = tuple(x.shape) if pot.batched else tuple(x.shape)[1:]
            raise PotentialError(
                f"potential {pot.name!r}: {what} returned shape {list(got)}, expected "
                f"{list(per)} ({want} per particle)."
            )
        return x.astype(jnp.promote_types(x.dtype, _float()))

    def init(self, params, pparams, tparams, prompt, n) -> SweepState:
        """Prefill the prompt once and broadcast its state to ``n`` particles."""
        plen = prompt.shape[0]
        extra = 1 if self.forced_eos else 0
        out, cache = self.model.prefill(
            params, prompt[None], jnp.ones((1, plen), jnp.int32), plen + self.T + extra
        )
        hook = getattr(self.model, "broadcast_state", None)
        cache = broadcast(cache, n) if hook is None else hook(cache, n, plen)
        out = broadcast(out, n)
        pstate = () if self.pot is None else self.pot.init_batch(pparams, prompt, n, self.T)
        tstate = self.twist.init_batch(tparams, prompt, n, self.T) if self.critic else ()
        zeros = jnp.zeros(n, _float())
        tokens = jnp.full((n, self.T), self.pad, jnp.int32)
        return SweepState(
            out, cache, tokens, jnp.zeros(n, bool), zeros, zeros, zeros, zeros, zeros, pstate,
            tstate, jnp.zeros(len(_FLAGS), bool),
        )

    def propose(self, params, pparams, tparams, c: SweepState, t):
        """``(log p0 [N, V], w^next [N, V] | None, twist ratio [N, V] | None)``."""
        n, v = c.tokens.shape[0], self.v
        logp0 = jax.nn.log_softmax(c.out.logits.astype(_float()), axis=-1)
        lwn = None
        if self.pot is not None:
            lwn = self._checked(
                self.pot.logw_next_batch(pparams, c.pstate, t), (n, v), "logw_next", self.pot
            )
        a = None
        if self.critic:
            a = self._checked(
                self.twist.logw_next_batch(tparams, c.tstate, t), (n, v), "logw_next", self.twist
            )
        elif self.twist is not None:
            lpsi = jnp.asarray(self.twist(tparams, c.out, c.tokens, t), _float())
            a = _neginf_nan(lpsi) - c.log_psi[:, None]
        return logp0, lwn, a

    def proposal_logits(self, c: SweepState, parts, t):
        """``(logits to sample from [N, V], normalized log q [N, V] | None)``; ``None``: the
        twist-induced proposal (the logits are ``p0 e^{w^next} psi`` ratio)."""
        lq = sum(x for x in parts if x is not None)
        if self.proposal is None:
            return lq, None
        log_q = jnp.asarray(self.proposal(c.out, c.tokens, t), _float())
        log_q = jax.nn.log_softmax(_neginf_nan(log_q), axis=-1)
        return log_q, log_q

    def advance(self, params, pparams, tparams, c: SweepState, s, parts, t, defer_last=False,
                log_q=None) -> SweepState:
        """Weight the drawn tokens ``s [N]`` and update the states (no model call)."""
        logp0, lwn, a = parts
        n = s.shape[0]
        lq = logp0
        if lwn is not None:
            lq = lq + jnp.where(jnp.isnan(lwn), -jnp.inf, lwn)
        if a is not None:
            lq = lq + jnp.where(jnp.isnan(a), -jnp.inf, a)
        log_norm, dead, s = normalize_and_guard(lq, s, c.done, self.pad)
        active = ~c.done & ~dead
        bad = c.bad
        if log_q is not None:  # another proposal: p0 e^{w^next} psi ratio / q at the drawn token
            lqq_s = _at(log_q, s)
            bad = bad.at[3].set(bad[3] | jnp.any(active & ~jnp.isfinite(lqq_s)))
            log_norm = _at(lq, s) - lqq_s
        if lwn is not None:
            lwn_s = _at(lwn, s)
            bad = bad.at[0].set(bad[0] | jnp.any(active & jnp.isnan(lwn_s)))
            bad = bad.at[1].set(bad[1] | jnp.any(~c.done & jnp.any(lwn == jnp.inf, axis=-1)))
        else:
            lwn_s = jnp.zeros(n)
        pstate, upd = c.pstate, jnp.zeros(n)
        if self.pot is not None:
            new, u = self.pot.update_batch(pparams, c.pstate, s, t)
            u = self._checked(u, (n,), "update", self.pot)
            if u is not None:
                upd = u
            pstate = _select(active, new, c.pstate)
        tstate, b = c.tstate, jnp.zeros(n)
        if self.critic:
            new, u = self.twist.update_batch(tparams, c.tstate, s, t)
            u = self._checked(u, (n,), "update", self.twist)
            b = jnp.zeros(n) if u is None else u
            tstate = _select(active, new, c.tstate)
            log_psi = c.log_psi + (0.0 if a is None else _at(a, s)) + b
        elif self.twist is not None:
            log_psi = c.log_psi + _at(a, s)
        else:
            log_psi = c.log_psi
        log_psi = jnp.where(active, log_psi, c.log_psi)  # carried after completion
        tokens = jax.lax.dynamic_update_slice(c.tokens, s[:, None], (0, t))
        bad = bad.at[0].set(bad[0] | jnp.any(active & jnp.isnan(upd)))
        bad = bad.at[1].set(bad[1] | jnp.any(active & (upd == jnp.inf)))
        is_last = (t == self.T - 1) & (not defer_last)
        complete = active & ((s == self.eos) | is_last)
        inc = log_norm + upd + b
        log_defer = c.log_defer
        if self.defer_eos:
            # the EOS step's factor p0 e^{w^next} psi ratio e^{w^upd} waits for the end: the
            # intermediate weight of finishing is 1 / q(EOS), the same footing as continuing
            lq_s = _at(lq, s)
            at_eos = active & (s == self.eos)
            inc = jnp.where(at_eos, log_norm - lq_s, inc)
            inc = jnp.where(at_eos & ((upd == -jnp.inf) | (b == -jnp.inf)), -jnp.inf, inc)
            log_defer = jnp.where(at_eos, lq_s + upd + b, log_defer)
        log_phi = c.log_phi + jnp.where(active, lwn_s + upd, 0.0)
        done = c.done | dead
        log_w = jnp.where(dead, -jnp.inf, c.log_w)
        c = c._replace(
            tokens=tokens, done=done, log_w=log_w, log_phi=log_phi, log_psi=log_psi,
            pstate=pstate, tstate=tstate, bad=bad, log_defer=log_defer,
        )
        return self._complete(pparams, c, complete, inc, active)

    def _complete(self, pparams, c: SweepState, complete, inc, active, forced_lp=None):
        """Add ``inc`` for active particles; at completion record the potential's value, which
        replaces the twist in the weight at the end of the sweep (:meth:`finish`)."""
        n = c.tokens.shape[0]
        if self.pot is not None and self.pot.complete is not None:

            def value(_):
                x = self.pot.complete_batch(pparams, c.pstate, c.tokens)
                return self._checked(x, (n,), "complete", self.pot)

            cval = jax.lax.cond(jnp.any(complete), value, lambda _: jnp.zeros(n, _float()), None)
        else:
            cval = jnp.zeros(n, _float())
        bad = c.bad.at[0].set(c.bad[0] | jnp.any(complete & jnp.isnan(cval)))
        bad = bad.at[1].set(bad[1] | jnp.any(complete & (cval == jnp.inf)))
        bad = bad.at[2].set(bad[2] | jnp.any(active & (c.log_psi == jnp.inf)))
        if forced_lp is not None:
            cval = cval + forced_lp
        step = _neginf_nan(jnp.where(active, inc, 0.0))
        # a particle whose prefix value or twist became zero is dead (weight zero, no NaN)
        died = active & (step == -jnp.inf)
        return c._replace(
            log_w=jnp.where(died, -jnp.inf, c.log_w + step),
            log_c=c.log_c + jnp.where(complete, _neginf_nan(cval), 0.0),
            done=c.done | complete | died,
            bad=bad,
        )

    def finish(self, c: SweepState) -> SweepState:
        """The last weight: ``+ c - log psi_tau`` for every complete particle. Until then a
        complete particle's intermediate target keeps its twist (``p0 Phi psi_tau``), like the
        unfinished ones, so finished particles are not resampled away for having paid their
        completion value before the others (the ESS-resampling degradation seen in
        genlm-control)."""
        final = _neginf_nan(c.log_c + c.log_defer - c.log_psi)
        log_w = jnp.where(c.log_w == -jnp.inf, -jnp.inf, c.log_w + final)
        return c._replace(log_w=log_w)

    def forced(self, params, pparams, c: SweepState) -> SweepState:
        """Complete the particles still active after ``T`` tokens with a forced EOS: weight
        ``p0(EOS | s) e^{w^next(EOS) + w^upd}``, then the potential's value."""
        n = c.tokens.shape[0]
        logp0 = jax.nn.log_softmax(c.out.logits.astype(_float()), axis=-1)
        eos = jnp.full(n, self.eos, jnp.int32)
        lp = logp0[:, self.eos]
        pstate = c.pstate
        if self.pot is not None:
            lwn = self.pot.logw_next_batch(pparams, c.pstate, self.T)
            if lwn is not None:
                lwn = self._checked(lwn, (n, self.v), "logw_next", self.pot)
                lp = lp + _neginf_nan(lwn[:, self.eos])
            new, u = self.pot.update_batch(pparams, c.pstate, eos, self.T)
            if u is not None:
                lp = lp + self._checked(u, (n,), "update", self.pot)
            pstate = _select(~c.done, new, c.pstate)
        active = ~c.done
        c = c._replace(pstate=pstate)
        return self._complete(pparams, c, active, jnp.zeros(n), active, forced_lp=lp)

    def reorder(self, c: SweepState, anc, did) -> SweepState:
        """Gather every particle's model state, tokens and potential states by ``anc`` (only the
        large states go under ``lax.cond(did)``)."""

        def take(x, fn=gather):
            return jax.lax.cond(did, lambda y: fn(y, anc), lambda y: y, x)

        hook = getattr(self.model, "reorder_state", None)
        return c._replace(
            out=take(c.out), cache=take(c.cache, gather if hook is None else hook),
            tokens=c.tokens[anc], done=c.done[anc],
            log_phi=c.log_phi[anc], log_c=c.log_c[anc], log_defer=c.log_defer[anc],
            log_psi=c.log_psi[anc], pstate=take(c.pstate), tstate=take(c.tstate),
        )

    def decode(self, params, c: SweepState, t) -> SweepState:
        """The model's output after token ``t``."""
        out, cache = self.model.decode_step(params, c.tokens[:, t], c.cache)
        return c._replace(out=out, cache=cache)


def build_smc(
    sw: Sweep,
    num_particles: int,
    scheme: rs.Scheme,
    ess_threshold: float,
    conditional: bool = False,
    every: Callable[[Array, Array], Array] | None = None,
) -> Callable:
    """``run(key, params, pparams, tparams, prompt [P], reference [T]) -> (SMCResult, flags)``:
    one SMC sweep as a ``lax.scan`` over the tokens (not jitted; pure, so ``jit`` / ``vmap``
    apply). ``scheme`` is the (conditional, when ``conditional``) resampling scheme, taking log
    weights; ``every(tokens, t)`` restricts resampling to unit boundaries; ``flags`` go to
    :func:`check_flags`."""
    n, T = int(num_particles), sw.T

    def sample_step(c, key, t, ref_t, params, pparams, tparams, defer_last=False):
        parts = sw.propose(params, pparams, tparams, c, t)
        logits, log_q = sw.proposal_logits(c, parts, t)
        s = sample(key, logits)
        if conditional:
            s = s.at[0].set(ref_t)
        s = jnp.where(c.done, sw.pad, s)
        return sw.advance(params, pparams, tparams, c, s, parts, t, defer_last, log_q)

    def sweep(key, params, pparams, tparams, prompt, reference):
        c = sw.constrain(sw.init(params, pparams, tparams, prompt, n))
        keys = jax.random.split(key, (T, 2))

        def body(c, t):
            c = sample_step(c, keys[t, 0], t, reference[t], params, pparams, tparams)
            ess = rs.ess(c.log_w)
            thr = ess_threshold if every is None else jnp.where(every(c.tokens, t), ess_threshold, 0.0)
            anc, did, log_w = rs.resample_if(keys[t, 1], c.log_w, thr, scheme)
            c = sw.reorder(c._replace(log_w=log_w), anc, did)
            c = sw.constrain(sw.decode(params, c, t))
            return c, (ess, did)

        c, (ess_hist, did_hist) = jax.lax.scan(body, c, jnp.arange(T - 1))
        c = sample_step(
            c, keys[T - 1, 0], T - 1, reference[T - 1], params, pparams, tparams,
            defer_last=sw.forced_eos,
        )
        if sw.forced_eos:
            c = sw.decode(params, c, T - 1)
            c = sw.forced(params, pparams, c)
        c = sw.constrain(sw.finish(c))  # log weights and flags replicated: readable everywhere
        log_Z = jax.nn.logsumexp(c.log_w) - jnp.log(n)
        ess_hist = jnp.concatenate([ess_hist, rs.ess(c.log_w)[None]])
        did_hist = jnp.concatenate([did_hist, jnp.zeros(1, bool)])
        res = SMCResult(c.tokens, c.log_w, log_Z, ess_hist, did_hist, c.log_phi + c.log_c)
        return res, c.bad

    return sweep


def build_teacher_force(sw: Sweep, num_sequences: int) -> Callable:
    """``tf(params, pparams, tparams, prompt [P], seqs [M, T]) -> (TeacherForced, flags)``: the
    same steps as :func:`build_smc` along given EOS-padded sequences (not jitted)."""
    m, T = int(num_sequences), sw.T

    def tf(params, pparams, tparams, prompt, seqs):
        c = sw.init(params, pparams, tparams, prompt, m)

        def body(c, t):
            s = seqs[:, t]
            hidden = getattr(c.out, "hidden", None)
            hidden = jnp.zeros((m, 0)) if hidden is None else hidden
            parts = sw.propose(params, pparams, tparams, c, t)
            logp0 = parts[0]
            lq = sum(x for x in parts if x is not None)
            log_norm = _neginf_nan(jax.nn.logsumexp(lq, axis=-1))
            _, log_q = sw.proposal_logits(c, parts, t)
            active = ~c.done
            # after completion or death the sweep emits the padding token with probability one
            pad = jnp.where(s == sw.pad, 0.0, -jnp.inf)
            q_s = _at(lq, s) - log_norm if log_q is None else _at(log_q, s)
            lq_s = jnp.where(active, _neginf_nan(q_s), pad)
            log_norm = log_norm + c.log_psi  # absolute: log sum_v p0 e^{w^next} psi_t(., v)
            lp0_s = jnp.where(active, _at(logp0, s), 0.0)
            c = sw.advance(params, pparams, tparams, c, s, parts, t, sw.forced_eos, log_q)
            new = sw.decode(params, c, t)
            rec = (lp0_s, lq_s, c.log_psi, jnp.where(active, log_norm, 0.0), hidden, active,
                   logp0, c.log_phi)
            return new, rec

        c, rec = jax.lax.scan(body, c, jnp.arange(T))
        if sw.forced_eos:
            c = sw.forced(params, pparams, c)
        c = sw.finish(c)
        rec = [jnp.swapaxes(r, 0, 1) for r in rec]
        log_prefix = rec.pop()
        return TeacherForced(*rec, c.log_phi + c.log_c, log_prefix), c.bad

    return tf


class _Logits(NamedTuple):
    logits: Array


class _FunctionModel:
    """``p0`` given by ``log_p0_fn(tokens [T], t) -> [V]``; its state is the tokens and the
    position of every particle."""

    def __init__(self, log_p0_fn, num_tokens, vocab_size):
        self.fn, self.T, self.vocab_size = log_p0_fn, num_tokens, vocab_size

    def prefill(self, params, token_ids, attention_mask, max_length):
        tokens = jnp.zeros((1, self.T), jnp.int32)
        pos = jnp.zeros((1,), jnp.int32)
        return _Logits(jax.vmap(self.fn)(tokens, pos)), (tokens, pos)

    def decode_step(self, params, s, state):
        tokens, pos = state
        tokens = jax.vmap(lambda x, p, v: x.at[p].set(v))(tokens, pos, s)
        pos = jnp.minimum(pos + 1, self.T - 1)
        return _Logits(jax.vmap(self.fn)(tokens, pos)), (tokens, pos)


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
) -> SMCResult:
    """Twisted SMC for a sequence model given by functions; jit-compatible.

    The same :class:`Sweep` as ``lm_inference.smc``, with ``p0`` from ``log_p0_fn``, the
    terminal potential ``phi`` (known at the last token, so the last step's twist is ``phi``
    itself, ``psi_T = phi``) and no EOS.

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
        resampling: resampling scheme (log weights; conditional SMC uses its conditional
            version).
        ess_threshold: relative ESS threshold (1: resample at every step).
        reference: ``[T]`` reference tokens for conditional SMC, or ``None``.

    Returns:
        :class:`SMCResult` (``samples [N, T]``, unnormalized ``log_weights``, ``log_Z``, ...).
    """
    custom = callable(proposal)
    if not custom and proposal not in ("twist", "base"):
        raise ValueError(
            f'proposal must be "twist", "base" or a function (tokens, t) -> [V] log q, '
            f"got {proposal!r}"
        )
    T, V = int(num_tokens), int(vocab_size)

    def twist(tparams, out, tokens, t):
        def final(_):
            def row(tok):
                return jax.vmap(lambda v: log_potential_fn(tok.at[T - 1].set(v)))(
                    jnp.arange(V, dtype=tok.dtype)
                )

            return jax.vmap(row)(tokens).astype(_float())

        def mid(_):
            if log_twist_fn is None:
                return jnp.zeros((tokens.shape[0], V), _float())
            return jax.vmap(log_twist_fn, (0, None))(tokens, t).astype(_float())

        return jax.lax.cond(t == T - 1, final, mid, None)

    if custom:
        q_fn = lambda out, tokens, t: jax.vmap(proposal, (0, None))(tokens, t)
    elif proposal == "base":
        q_fn = lambda out, tokens, t: out.logits
    else:
        q_fn = None
    pot = as_potential(log_potential_fn, name=getattr(log_potential_fn, "__name__", "log_potential_fn"))
    sw = Sweep(_FunctionModel(log_p0_fn, T, V), T, -1, pot, twist, proposal=q_fn)
    cond = reference is not None
    if cond:
        reference = jnp.asarray(reference, jnp.int32)
        if reference.shape != (T,):
            raise ValueError(
                f"reference must be [num_tokens]={T} tokens, got shape {reference.shape}"
            )
        resampling = rs.conditional(resampling)
    else:
        reference = jnp.zeros(T, jnp.int32)
    fn = build_smc(sw, num_particles, resampling, ess_threshold, cond)
    res, bad = fn(key, None, pot.params, None, jnp.zeros(1, jnp.int32), reference)
    if not isinstance(bad, jax.core.Tracer):
        check_flags(bad, pot.name, "log_twist_fn")
    return res
