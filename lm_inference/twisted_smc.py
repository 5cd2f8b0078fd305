r"""Twisted SMC over a language model's tokens (Zhao, Brekelmans, Makhzani and Grosse, 2024).

Target: ``sigma(s_{1:T}) ∝ p0(s_{1:T} | prompt) phi(s_{1:T})`` (:class:`lm_inference.Target`) with
a stateful potential (:mod:`lm_inference.potentials`). The algorithm, its intermediate targets
``p0 Phi_t psi_t``, the locally constrained proposal ``q_t ∝ p0 e^{w^next} psi_t / psi_{t-1}``
and its weights are those of :mod:`kernels.smc.twisted`, whose step function
(:class:`kernels.smc.twisted.Sweep`) runs here on the LM with its KV cache: there is one twisted
SMC in the project, and :func:`kernels.smc.twisted.run` is the same sweep on a function-defined
model. ``Z_hat`` is unbiased for ``Z``; with the optimal twists it is exact; conditional SMC
(``reference``) with an exact sample of ``sigma`` gives a stochastic upper bound on ``log Z``.

The twist is ``None``, a learned :class:`lm_inference.twists.Twist` (``log psi_t`` of every next
token from the LM's hidden state), or any :class:`lm_inference.potentials.Potential` used as a
*critic* (genlm-control's term): its prefix value is the twist, its state is carried like the
target's, and the weights correct for it exactly, so the target stays ``p0 phi``. Dead particles
(every next token masked, or a prefix value of zero) get weight ``-inf``; when all die,
``log_Z = -inf`` with a warning.

Implementation: one jitted ``lax.scan`` over tokens whose arguments are the LM, twist and potential
parameters and the prompt (a new prompt of the same length reuses the compiled sweep, which is
cached on the potential); the prompt is prefilled once and its KV cache broadcast to the
particles; on resampling the caches, tokens and potential / twist states are gathered along the
particle axis. :func:`smc`, :func:`smc_runs` and :func:`teacher_force` (and through them exact
enumeration, bounds and twist training) share that step.
"""

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels.smc import resampling
from kernels.smc import twisted as tw
from kernels.smc.twisted import SMCResult, TeacherForced
from kernels.types import Array, ArrayTree, PRNGKey
from lm_inference.potentials.base import Potential
from lm_inference.potentials.callbacks import raise_host_errors
from lm_inference.sharding import particle_constraint, resolve
from lm_inference.target import Target
from lm_inference.twists import Twist

__all__ = ["SMCResult", "smc", "smc_runs", "teacher_force", "TeacherForced"]


def _raise_bad(bad, target: Target, twist):
    raise_host_errors()
    who = twist.name if isinstance(twist, Potential) else "twist"
    tw.check_flags(bad, None if target.potential is None else target.potential.name, who)


def _sweep(target: Target, twist, defer_eos: bool = False, mesh=None) -> tw.Sweep:
    """The shared step (:class:`kernels.smc.twisted.Sweep`) on the target's LM (particles and
    cache constrained to ``mesh``, :mod:`lm_inference.sharding`)."""
    if isinstance(twist, Twist):
        apply = twist.apply
        twist = lambda tp, out, tokens, t: apply(tp, out.hidden, tokens, t)
    constrain = None if mesh is None else particle_constraint(mesh, target.lm.vocab_size)
    return tw.Sweep(
        target.lm, target.num_tokens, target.eos, target.potential, twist,
        forced_eos=target.forced_eos, defer_eos=defer_eos, constrain=constrain,
    )


def _build(target: Target, twist, n: int, scheme, ess_threshold: float, cond: bool, every,
           defer_eos: bool, mesh=None):
    sw = _sweep(target, twist, defer_eos, mesh)
    return jax.jit(tw.build_smc(sw, n, scheme, ess_threshold, cond, every))


# the plain schemes (their conditional versions are the exact conditional laws); drivers call
# them without the probability-vector check (``resampling.unchecked``)
_SCHEMES = resampling.SCHEMES


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
              defer_eos, mesh=None):
    every = _every(resample_every)
    tkey, _ = _twist_args(twist)
    defer = (twist is None) if defer_eos is None else bool(defer_eos)
    key = (_static_key(target), tkey, int(num_particles), scheme, float(ess_threshold), cond,
           resample_every if callable(resample_every) else every is not None and resample_every,
           defer, mesh)
    fns = _fns(target, "smc")
    if key not in fns:
        fns[key] = _build(target, twist, int(num_particles), scheme, float(ess_threshold), cond,
                          every, defer, mesh)
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
    mesh=None,
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
        mesh: a ``('particles', 'model')`` mesh (:mod:`lm_inference.sharding`): the particles
            (and their KV cache) split over ``'particles'``, the weights and the cache's KV heads
            over ``'model'``; default ``target.lm.mesh``. The result equals the unsharded one to
            float rounding.

    Returns:
        :class:`SMCResult`. A warning is issued when every particle died (``log_Z = -inf``).
    """
    scheme, cond, reference = _prepare(target, num_particles, resampling, ess_threshold, reference)
    mesh, placed = resolve(target.lm, mesh, int(num_particles))
    fn = _compiled(target, twist, num_particles, scheme, ess_threshold, cond, resample_every,
                   defer_eos, mesh)
    params = placed if params is None else params
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
    mesh=None,
) -> SMCResult:
    """``R`` independent :func:`smc` runs in one vmapped call (``keys [R]``, optional
    ``references [R, T]`` for conditional SMC); results have a leading ``R`` axis."""
    scheme, cond, _ = _prepare(
        target, num_particles, resampling, ess_threshold,
        None if references is None else references[0],
    )
    mesh, placed = resolve(target.lm, mesh, int(num_particles))
    fn = _compiled(target, twist, num_particles, scheme, ess_threshold, cond, resample_every,
                   defer_eos, mesh)
    r = keys.shape[0]
    if cond:
        refs = target.check_tokens(references, "smc_runs: references")
        if refs.shape[0] != r:
            raise ValueError(f"smc_runs: {refs.shape[0]} references for {r} keys.")
    else:
        refs = jnp.zeros((r, target.num_tokens), jnp.int32)
    params = placed if params is None else params
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



def _build_tf(target: Target, twist, m: int):
    return jax.jit(tw.build_teacher_force(_sweep(target, twist), m))


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
