r"""Twisted SMC over a language model's tokens (Zhao, Brekelmans, Makhzani and Grosse, 2024).

Target: ``sigma(s_{1:T}) ∝ p0(s_{1:T} | prompt) phi(s_{1:T})`` (:class:`lm_inference.Target`) with
a stateful potential (:mod:`lm_inference.potentials`): at step ``t`` it gives the log weight of
every next token ``w^next_t [V]`` (e.g. a regex mask), an increment ``w^upd_t`` once the token is
drawn, and a value ``c`` at completion (EOS or the last token). Intermediate targets

$$\pi_t(s_{1:t}) \propto p_0(s_{1:t})\, \Phi_t(s_{1:t})\, \psi_t(s_{1:t}),$$

with the potential's prefix value ``Phi_t`` and a twist ``psi_t`` (``psi = 1``: no twist). The
proposal is computed over the whole vocabulary in one pass,

$$q_t(v \mid s_{<t}) \propto p_0(v \mid s_{<t})\, e^{w^{next}_t(v)}\,
\frac{\psi_t(s_{<t}, v)}{\psi_{t-1}(s_{<t})},$$

and the incremental weight is ``w_t = log sum_v p0 e^{w^next} psi_t / psi_{t-1} + w^upd_t``; the
potential's value at completion replaces the twist in the last weight, ``+ c - log psi_tau``
(a particle complete at ``tau < T`` keeps ``p0 Phi psi_tau`` as its intermediate target until
then, so finished and unfinished particles are compared on the same footing). So
``Z_hat = prod_t (1/N) sum_i w_t^i`` (resampling when ``ESS < ess_threshold N``) is unbiased for
``Z`` (``E[log Z_hat] <= log Z``), and with the optimal twists
``psi_t^* = E_{p0}[Phi_tau e^c / Phi_t | s_{1:t}]`` of a potential without ``w^upd`` every weight is
equal and ``Z_hat = Z`` exactly. ``ess_threshold = 0`` is importance sampling. Conditional SMC
(``reference``) clamps particle 0 to the reference and uses conditional resampling; with an exact
sample of ``sigma`` its ``log Z_hat`` is a stochastic upper bound.

The twist is ``None``, a learned :class:`lm_inference.twists.Twist` (``log psi_t`` of every next
token from the LM's hidden state), or any :class:`lm_inference.potentials.Potential` used as a
*critic* (genlm-control's term): its prefix value is the twist, its state is carried like the
target's, and the weights above correct for it exactly, so the target stays ``p0 phi``.

A particle whose every next token has weight zero, or whose prefix value becomes zero, is dead:
weight ``-inf``, it emits EOS padding and is never resampled. When all die, ``log_Z = -inf``.

Implementation: one jitted ``lax.scan`` over tokens whose arguments are the LM, twist and potential
parameters and the prompt (a new prompt of the same length reuses the compiled sweep); the prompt
is prefilled once and its KV cache broadcast to the particles; on resampling the caches, tokens
and potential / twist states are gathered along the particle axis. :func:`smc` and
:func:`teacher_force` (and through them exact enumeration, bounds and twist training) share one
step function (:class:`_Sweep`).
"""

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.smc import resampling
from kernels.smc import twisted as tw
from kernels.types import Array, ArrayTree, PRNGKey
from lm_inference.base import broadcast_cache, reorder_cache
from lm_inference.potentials.base import Potential, PotentialError
from lm_inference.potentials.callbacks import raise_host_errors
from lm_inference.target import Target
from lm_inference.twists import Twist

__all__ = ["SMCResult", "smc", "smc_runs", "teacher_force", "TeacherForced"]


class SMCResult(NamedTuple):
    """Output of :func:`smc`.

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


class _Carry(NamedTuple):
    out: ArrayTree  # DecodeOutput of the LM before the next token
    cache: ArrayTree
    tokens: Array  # [N, T]
    done: Array  # [N] complete (EOS, last token) or dead
    log_w: Array  # [N]
    log_phi: Array  # [N] log prefix value of the potential (without the completion value)
    log_c: Array  # [N] completion value (0 until complete)
    log_defer: Array  # [N] the EOS step's factor, deferred to the end (``defer_eos``)
    log_psi: Array  # [N] log twist value of the current prefix
    pstate: ArrayTree  # potential state
    tstate: ArrayTree  # critic state (a Potential used as twist)
    bad: Array  # [3] bool: a potential returned NaN / +inf / a twist returned +inf


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


class _Sweep:
    """The step function shared by :func:`smc` and :func:`teacher_force` for one configuration."""

    def __init__(self, target: Target, twist, n: int, defer_eos: bool = False):
        self.lm, self.T, self.eos, self.n = target.lm, target.num_tokens, target.eos, n
        self.v = target.lm.vocab_size
        self.pot = target.potential
        self.forced_eos = target.forced_eos
        self.critic = isinstance(twist, Potential)
        self.twist = twist
        self.defer_eos = defer_eos

    # -- potential / twist outputs, checked ---------------------------------------------------
    def _checked(self, x, shape, what, pot):
        """``x`` as float32 after checking (at trace time) that it is ``shape`` float."""
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
        return x.astype(jnp.float32)

    def init(self, params, pparams, tparams, prompt, n):
        plen = prompt.shape[0]
        extra = 1 if self.forced_eos else 0
        out, cache = self.lm.prefill(
            params, prompt[None], jnp.ones((1, plen), jnp.int32), plen + self.T + extra
        )
        cache = broadcast_cache(cache, n)
        out = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), out)
        pstate = () if self.pot is None else self.pot.init_batch(pparams, prompt, n, self.T)
        tstate = self.twist.init_batch(tparams, prompt, n, self.T) if self.critic else ()
        zeros = jnp.zeros(n, jnp.float32)
        tokens = jnp.full((n, self.T), max(self.eos, 0), jnp.int32)
        return _Carry(
            out, cache, tokens, jnp.zeros(n, bool), zeros, zeros, zeros, zeros, zeros, pstate,
            tstate, jnp.zeros(3, bool),
        )

    def propose(self, params, pparams, tparams, c: _Carry, t):
        """``(log p0 [N, V], w^next [N, V] | None, twist ratio [N, V] | None)``."""
        n, v = c.tokens.shape[0], self.v
        logp0 = jax.nn.log_softmax(c.out.logits.astype(jnp.float32), axis=-1)
        lwn = None
        if self.pot is not None:
            lwn = self._checked(
                self.pot.logw_next_batch(pparams, c.pstate, t), (n, v), "logw_next", self.pot
            )
        a = None
        if isinstance(self.twist, Twist):
            lpsi = jnp.asarray(self.twist.apply(tparams, c.out.hidden, c.tokens, t), jnp.float32)
            a = _neginf_nan(lpsi) - c.log_psi[:, None]
        elif self.critic:
            a = self._checked(
                self.twist.logw_next_batch(tparams, c.tstate, t), (n, v), "logw_next", self.twist
            )
        return logp0, lwn, a

    def advance(self, params, pparams, tparams, c: _Carry, s, parts, t, defer_last=False):
        """Weight the drawn tokens ``s [N]`` and update the states (no LM decode)."""
        logp0, lwn, a = parts
        n = s.shape[0]
        lq = logp0
        if lwn is not None:
            lq = lq + jnp.where(jnp.isnan(lwn), -jnp.inf, lwn)
        if a is not None:
            lq = lq + jnp.where(jnp.isnan(a), -jnp.inf, a)
        log_norm, dead, s = tw.normalize_and_guard(lq, s, c.done, max(self.eos, 0))
        active = ~c.done & ~dead
        bad = c.bad
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
        if isinstance(self.twist, Twist):
            log_psi = c.log_psi + _at(a, s)
        elif self.critic:
            new, u = self.twist.update_batch(tparams, c.tstate, s, t)
            u = self._checked(u, (n,), "update", self.twist)
            b = jnp.zeros(n) if u is None else u
            tstate = _select(active, new, c.tstate)
            log_psi = c.log_psi + (0.0 if a is None else _at(a, s)) + b
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
        c = self._complete(pparams, c, complete, inc, active)
        return c

    def _complete(self, pparams, c: _Carry, complete, inc, active, forced_lp=None):
        """Add ``inc`` for active particles; at completion record the potential's value, which
        replaces the twist in the weight at the end of the sweep (:meth:`finish`)."""
        n = c.tokens.shape[0]
        if self.pot is not None and self.pot.complete is not None:

            def value(_):
                x = self.pot.complete_batch(pparams, c.pstate, c.tokens)
                return self._checked(x, (n,), "complete", self.pot)

            cval = jax.lax.cond(
                jnp.any(complete), value, lambda _: jnp.zeros(n, jnp.float32), None
            )
        else:
            cval = jnp.zeros(n, jnp.float32)
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

    def finish(self, c: _Carry) -> _Carry:
        """The last weight: ``+ c - log psi_tau`` for every complete particle. Until then a
        complete particle's intermediate target keeps its twist (``p0 Phi psi_tau``), like the
        unfinished ones, so finished particles are not resampled away for having paid their
        completion value before the others (the ESS-resampling degradation seen in
        genlm-control)."""
        final = _neginf_nan(c.log_c + c.log_defer - c.log_psi)
        log_w = jnp.where(c.log_w == -jnp.inf, -jnp.inf, c.log_w + final)
        return c._replace(log_w=log_w)

    def forced(self, params, pparams, c: _Carry):
        """Complete the particles still active after ``T`` tokens with a forced EOS: weight
        ``p0(EOS | s) e^{w^next(EOS) + w^upd}``, then the potential's value."""
        n = c.tokens.shape[0]
        logp0 = jax.nn.log_softmax(c.out.logits.astype(jnp.float32), axis=-1)
        eos = jnp.full(n, self.eos, jnp.int32)
        lp = logp0[:, self.eos]
        pstate = c.pstate
        if self.pot is not None:
            lwn = self.pot.logw_next_batch(pparams, c.pstate, self.T)
            if lwn is not None:
                lp = lp + _neginf_nan(self._checked(lwn, (n, self.v), "logw_next", self.pot)[:, self.eos])
            new, u = self.pot.update_batch(pparams, c.pstate, eos, self.T)
            if u is not None:
                lp = lp + self._checked(u, (n,), "update", self.pot)
            pstate = _select(~c.done, new, c.pstate)
        active = ~c.done
        c = c._replace(pstate=pstate)
        return self._complete(pparams, c, active, jnp.zeros(n), active, forced_lp=lp)

    def reorder(self, c: _Carry, anc, did):
        def take(x):
            return jax.lax.cond(did, lambda y: reorder_cache(y, anc), lambda y: y, x)

        return c._replace(
            out=take(c.out), cache=take(c.cache), tokens=c.tokens[anc], done=c.done[anc],
            log_phi=c.log_phi[anc], log_c=c.log_c[anc], log_defer=c.log_defer[anc],
            log_psi=c.log_psi[anc], pstate=take(c.pstate),
            tstate=take(c.tstate),
        )

    def decode(self, params, c: _Carry, t):
        out, cache = self.lm.decode_step(params, c.tokens[:, t], c.cache)
        return c._replace(out=out, cache=cache)


_ERRORS = (
    "returned NaN (a log weight must be a float in [-inf, inf); map undefined values to -inf)",
    "returned +inf (phi must be finite; an unbounded potential gives log_Z = inf)",
    "(a twist) returned +inf",
)


def _raise_bad(bad, target: Target, twist):
    raise_host_errors()
    bad = np.asarray(bad)
    if bad.ndim > 1:
        bad = bad.any(axis=tuple(range(bad.ndim - 1)))
    for i, msg in enumerate(_ERRORS):
        if bad[i]:
            who = twist.name if (i == 2 and isinstance(twist, Potential)) else (
                "twist" if i == 2 else target.potential.name
            )
            raise PotentialError(f"potential {who!r} {msg}.")


def _build(target: Target, twist, n: int, scheme, ess_threshold: float, cond: bool, every,
           defer_eos: bool):
    sw = _Sweep(target, twist, n, defer_eos)
    T = target.num_tokens

    def sample_step(c, key, t, ref_t, params, pparams, tparams, defer_last=False):
        parts = sw.propose(params, pparams, tparams, c, t)
        lq = sum(x for x in parts if x is not None)
        s = tw.sample(key, lq)
        if cond:
            s = s.at[0].set(ref_t)
        s = jnp.where(c.done, max(target.eos, 0), s)
        return sw.advance(params, pparams, tparams, c, s, parts, t, defer_last)

    def sweep(key, params, pparams, tparams, prompt, reference):
        c = sw.init(params, pparams, tparams, prompt, n)
        keys = jax.random.split(key, (T, 2))

        def body(c, t):
            c = sample_step(c, keys[t, 0], t, reference[t], params, pparams, tparams)
            ess = resampling.ess(c.log_w)
            thr = ess_threshold if every is None else jnp.where(every(c.tokens, t), ess_threshold, 0.0)
            anc, did, log_w = resampling.resample_if(keys[t, 1], c.log_w, thr, scheme)
            c = sw.reorder(c._replace(log_w=log_w), anc, did)
            c = sw.decode(params, c, t)
            return c, (ess, did)

        c, (ess_hist, did_hist) = jax.lax.scan(body, c, jnp.arange(T - 1))
        c = sample_step(
            c, keys[T - 1, 0], T - 1, reference[T - 1], params, pparams, tparams,
            defer_last=target.forced_eos,
        )
        if target.forced_eos:
            c = sw.decode(params, c, T - 1)
            c = sw.forced(params, pparams, c)
        c = sw.finish(c)
        log_Z = jax.nn.logsumexp(c.log_w) - jnp.log(n)
        ess_hist = jnp.concatenate([ess_hist, resampling.ess(c.log_w)[None]])
        did_hist = jnp.concatenate([did_hist, jnp.zeros(1, bool)])
        res = SMCResult(c.tokens, c.log_w, log_Z, ess_hist, did_hist, c.log_phi + c.log_c)
        return res, c.bad

    return jax.jit(sweep)


# the sweep always passes log weights: skip the schemes' probability-vector misuse check, whose
# host callback under ``vmap`` (``smc_runs``, bounds) costs more compile time than the sweep
_SCHEMES = {k: functools.partial(v, check=False) for k, v in resampling.SCHEMES.items()}


def _every(resample_every):
    if resample_every is None:
        return None
    if callable(resample_every):
        return resample_every
    k = int(resample_every)
    if k < 1:
        raise ValueError(f"smc: resample_every must be a positive int, got {resample_every!r}.")
    return lambda tokens, t: (t + 1) % k == 0


def _fns(target: Target, name: str) -> dict:
    """Compiled sweeps, kept with the potential (or the LM when there is none), so every target
    with the same potential and LM shares them: a new prompt of the same length does not
    recompile, and they are freed with the potential."""
    holder = target.lm if target.potential is None else target.potential
    store = holder.__dict__.setdefault("_twisted_smc_fns", {})
    return store.setdefault(name, {})


def _static_key(target: Target):
    return (target.num_tokens, target.eos, target.forced_eos, target.lm)


def _twist_args(twist):
    if twist is None:
        return None, None
    if isinstance(twist, Potential):
        return twist, twist.params
    if isinstance(twist, Twist):
        return twist.apply, twist.params
    raise TypeError(
        "smc: twist must be None, an lm_inference.twists.Twist or an "
        f"lm_inference.potentials.Potential (a critic), got {type(twist).__name__}."
    )


def _prepare(target, num_particles, resampling_, ess_threshold, reference, resample_every=None):
    if not isinstance(target, Target):
        raise TypeError(f"smc: target must be an lm_inference.Target, got {type(target).__name__}.")
    if not isinstance(num_particles, int | np.integer) or num_particles < 1:
        raise ValueError(f"smc: num_particles must be a positive int, got {num_particles!r}.")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"smc: ess_threshold must be in [0, 1], got {ess_threshold}.")
    if isinstance(resampling_, str):
        if resampling_ not in _SCHEMES:
            raise ValueError(
                f"smc: unknown resampling {resampling_!r}; choose one of {sorted(_SCHEMES)}."
            )
        scheme = _SCHEMES[resampling_]
    else:
        scheme = resampling_
    cond = reference is not None
    if cond:
        reference = target.check_tokens(reference, "smc: reference", batch=False)
        scheme = _conditional(scheme)
    else:
        reference = jnp.zeros(target.num_tokens, jnp.int32)
    return scheme, cond, reference


def _compiled(target, twist, num_particles, scheme, ess_threshold, cond, resample_every,
              defer_eos):
    every = _every(resample_every)
    tkey, _ = _twist_args(twist)
    defer = (twist is None) if defer_eos is None else bool(defer_eos)
    key = (_static_key(target), tkey, int(num_particles), scheme, float(ess_threshold), cond,
           resample_every if callable(resample_every) else every is not None and resample_every,
           defer)
    fns = _fns(target, "smc")
    if key not in fns:
        fns[key] = _build(target, twist, int(num_particles), scheme, float(ess_threshold), cond,
                          every, defer)
    return fns[key]


def smc(
    key: PRNGKey,
    target: Target,
    num_particles: int,
    twist: Twist | Potential | None = None,
    resampling: str | Callable = "systematic",
    ess_threshold: float = 0.5,
    reference: Array | None = None,
    params: ArrayTree | None = None,
    resample_every: int | Callable | None = None,
    defer_eos: bool | None = None,
) -> SMCResult:
    """Run twisted SMC (module docstring) on ``target``.

    Args:
        key: PRNG key.
        target: the :class:`lm_inference.Target`.
        num_particles: ``N``.
        twist: ``None`` (proposal ``p0 e^{w^next}``), a :class:`lm_inference.twists.Twist`
            (``apply(params, hidden [N, H], tokens [N, T], t) -> log psi_t [N, V]``, ``params``),
            or a :class:`lm_inference.potentials.Potential` used as a critic.
        resampling: ``"systematic"``, ``"multinomial"``, ``"stratified"``, ``"residual"`` or a
            scheme from :mod:`kernels.smc.resampling`; conditional SMC uses its conditional
            version.
        ess_threshold: resample when ``ESS < ess_threshold * N``; ``1`` every step, ``0`` never
            (importance sampling).
        reference: ``[T]`` token ids for conditional SMC (particle 0 is clamped to them; an
            exact ``sigma`` sample gives an upper bound on ``log Z``).
        params: LM parameters (default ``target.lm.params``).
        resample_every: resample only at unit boundaries: an int ``k`` (after every ``k``
            tokens) or ``(tokens [N, T], t) -> bool`` (e.g. :func:`lm_inference.potentials.at_words`'s
            boundary test); ``None``: after any token.
        defer_eos: apply the EOS step's factor (``p0(EOS) e^{w^next(EOS)}`` and the twist ratio)
            at the end of the sweep instead of when the particle finishes. Until then a finished
            particle's intermediate weight is ``1 / q(EOS)``, so it is not resampled away for
            having paid ``p0(EOS)`` while unfinished particles have not (the degradation of
            ESS-resampled log Z with N seen in genlm-control). The final weights are the same.
            Default: on without a twist, off with one (a good twist already prices finishing;
            the optimal twist keeps zero variance).

    Returns:
        :class:`SMCResult`. A warning is issued when every particle died (``log_Z = -inf``).
    """
    scheme, cond, reference = _prepare(target, num_particles, resampling, ess_threshold, reference)
    fn = _compiled(target, twist, num_particles, scheme, ess_threshold, cond, resample_every,
                   defer_eos)
    params = target.lm.params if params is None else params
    _, tparams = _twist_args(twist)
    pparams = None if target.potential is None else target.potential.params
    res, bad = fn(key, params, pparams, tparams, target.prompt_ids, reference)
    if not isinstance(bad, jax.core.Tracer):
        _raise_bad(bad, target, twist)
        if not np.isfinite(float(res.log_Z)) and float(res.log_Z) < 0:
            warnings.warn(
                "smc: every particle died (all next tokens had weight zero or the potential's "
                "prefix value became zero): log_Z = -inf. The constraint may be unsatisfiable "
                "within T tokens from this prompt, or N too small.",
                RuntimeWarning,
                stacklevel=2,
            )
    return res


def smc_runs(
    keys: Array,
    target: Target,
    num_particles: int,
    twist=None,
    resampling: str | Callable = "systematic",
    ess_threshold: float = 0.5,
    references: Array | None = None,
    params: ArrayTree | None = None,
    resample_every: int | Callable | None = None,
    defer_eos: bool | None = None,
) -> SMCResult:
    """``R`` independent :func:`smc` runs in one vmapped call (``keys [R]``, optional
    ``references [R, T]`` for conditional SMC); results have a leading ``R`` axis."""
    scheme, cond, _ = _prepare(
        target, num_particles, resampling, ess_threshold,
        None if references is None else references[0],
    )
    fn = _compiled(target, twist, num_particles, scheme, ess_threshold, cond, resample_every,
                   defer_eos)
    r = keys.shape[0]
    if cond:
        refs = target.check_tokens(references, "smc_runs: references")
        if refs.shape[0] != r:
            raise ValueError(f"smc_runs: {refs.shape[0]} references for {r} keys.")
    else:
        refs = jnp.zeros((r, target.num_tokens), jnp.int32)
    params = target.lm.params if params is None else params
    _, tparams = _twist_args(twist)
    pparams = None if target.potential is None else target.potential.params
    res, bad = jax.vmap(fn, (0, None, None, None, None, 0))(
        keys, params, pparams, tparams, target.prompt_ids, refs
    )
    _raise_bad(bad, target, twist)
    return res


_COND = {}


def _conditional(scheme):
    if scheme not in _COND:
        _COND[scheme] = resampling.conditional(scheme)
    return _COND[scheme]


class TeacherForced(NamedTuple):
    """Per-step quantities along given sequences (see :func:`teacher_force`).

    Attributes:
        log_p0: ``[M, T]`` ``log p0(s_t | s_<t)`` (0 after completion).
        log_q: ``[M, T]`` ``log q_t(s_t | s_<t)`` under the twist and the potential's next-token
            weights (0 after completion).
        log_psi: ``[M, T]`` ``log psi_t(s_{1:t})`` (carried after completion).
        log_norm: ``[M, T]`` ``log sum_v p0(v | s_<t) e^{w^next(v)} psi_t(s_<t, v)`` (0 after
            completion).
        hidden: ``[M, T, H]`` the LM's hidden state before step ``t``.
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


def _build_tf(target: Target, twist, m: int):
    sw = _Sweep(target, twist, m)
    T = target.num_tokens

    def tf(params, pparams, tparams, prompt, seqs):
        c = sw.init(params, pparams, tparams, prompt, m)

        def body(c, t):
            s = seqs[:, t]
            hidden = c.out.hidden
            parts = sw.propose(params, pparams, tparams, c, t)
            logp0 = parts[0]
            lq = sum(x for x in parts if x is not None)
            log_norm = _neginf_nan(jax.nn.logsumexp(lq, axis=-1))
            active = ~c.done
            # after completion or death the sweep emits the padding token with probability one
            pad = jnp.where(s == max(target.eos, 0), 0.0, -jnp.inf)
            lq_s = jnp.where(active, _neginf_nan(_at(lq, s) - log_norm), pad)
            log_norm = log_norm + c.log_psi  # absolute: log sum_v p0 e^{w^next} psi_t(., v)
            lp0_s = jnp.where(active, _at(logp0, s), 0.0)
            c = sw.advance(params, pparams, tparams, c, s, parts, t, target.forced_eos)
            new = sw.decode(params, c, t)
            rec = (lp0_s, lq_s, c.log_psi, jnp.where(active, log_norm, 0.0), hidden, active,
                   logp0, c.log_phi)
            return new, rec

        c, rec = jax.lax.scan(body, c, jnp.arange(T))
        if target.forced_eos:
            c = sw.forced(params, pparams, c)
        c = sw.finish(c)
        rec = [jnp.swapaxes(r, 0, 1) for r in rec]
        log_prefix = rec.pop()
        return TeacherForced(*rec, c.log_phi + c.log_c, log_prefix), c.bad

    return jax.jit(tf)


def teacher_force(
    target: Target,
    sequences: Array,
    twist: Twist | Potential | None = None,
    params: ArrayTree | None = None,
) -> TeacherForced:
    """Proposal and model log probabilities along given ``[M, T]`` sequences (EOS-padded), with
    the same step function as :func:`smc`.

    Used for exact enumeration and KLs, IWAE bounds with exact samples, and twist training.

    Args:
        target: the target.
        sequences: ``[M, T]`` token ids.
        twist: the twist defining ``q`` (``None``: ``q ∝ p0 e^{w^next}``).
        params: LM parameters (default ``target.lm.params``).

    Returns:
        :class:`TeacherForced`.
    """
    seqs = target.check_tokens(sequences, "teacher_force: sequences")
    seqs = target.pad_after_eos(seqs)
    tkey, tparams = _twist_args(twist)
    k = (_static_key(target), tkey, int(seqs.shape[0]))
    fns = _fns(target, "teacher_force")
    if k not in fns:
        fns[k] = _build_tf(target, twist, int(seqs.shape[0]))
    params = target.lm.params if params is None else params
    pparams = None if target.potential is None else target.potential.params
    out, bad = fns[k](params, pparams, tparams, target.prompt_ids, seqs)
    if not isinstance(bad, jax.core.Tracer):
        _raise_bad(bad, target, twist)
    return out
