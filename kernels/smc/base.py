r"""One SMC step, ``init`` / ``step``, after BlackJAX's ``blackjax/smc/base.py``: the engine that
:func:`kernels.smc.sequential.run`, :func:`kernels.smc.tempering.run` (fixed schedule),
:func:`kernels.smc.tempering.adaptive` and conditional SMC scan over, and that users can loop
over themselves.

State ``(x^{1:N}_{t-1}, \log W^{1:N}_{t-1}, \log \hat Z_{t-1})`` (normalized log weights,
``logsumexp = 0``). One step ``t``:

1. resample if ``ESS(W_{t-1}) < ess_threshold * N`` (ancestors ``A^i``; the weights become
   uniform), conditional resampling (``A^0 = 0``) when a reference is given;
2. move ``x_t^i ~ M_t(x_{t-1}^{A^i}, \cdot)`` with the move's parameters (shared or per particle),
   then with a reference ``x_t^0 = x_t^*`` (conditional SMC);
3. reweight ``\log w^i = \log W^{A^i} + \log G_t(x_{t-1}^{A^i}, x_t^i)``;
   ``\log \hat Z_t = \log \hat Z_{t-1} + \log \sum_i w^i`` and the weights are normalized.

``\hat Z_T`` is unbiased (plain SMC) and ``1 / \hat Z_T`` is unbiased for ``1 / Z`` when the
reference is an exact draw from the target (conditional SMC); see :mod:`kernels.smc.sequential`.

Differences from BlackJAX: log weights (not weights); resampling is ESS-triggered and comes
*before* the move (BlackJAX resamples at every step); the state carries the running
``log_Z``; the move's parameters are an argument of :func:`step` (BlackJAX keeps them in the
state as ``update_parameters``). ``SMCInfo.update_info`` is the move's own info, as in BlackJAX.

Example (a user-written loop; ``run`` is the same loop as a ``lax.scan``)::

    state = init(x0)                                     # x0: pytree, leaves [N, ...]
    move = vmap_move(lambda k, x, p: (x + p * jax.random.normal(k, x.shape), ()))
    for t in range(1, T + 1):
        key, k = jax.random.split(key)
        state, info = step(k, state, move, lambda xp, x: log_g(x, y[t]), move_params=0.5)
    state.log_Z                                          # log of the unbiased estimate of Z
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kernels.smc import resampling as rs
from kernels.smc import sharding
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = [
    "SMCState",
    "SMCInfo",
    "init",
    "step",
    "vmap_move",
    "resample",
    "gather",
    "clamp_first",
]

# move(key, particles, params) -> (particles, update_info), or, fused (no log_weight_fn),
# (particles, log_potentials [N], update_info); batched over the particles (see vmap_move)
Move = Callable[[PRNGKey, ArrayTree, Any], tuple]
# log_weight_fn(prev_particles, particles) -> [N] log potentials log G_t
LogWeightFn = Callable[[ArrayTree, ArrayTree], Array]


class SMCState(NamedTuple):
    """State of an SMC run between steps.

    Attributes:
        particles: pytree, leaves ``[N, ...]``.
        log_weights: ``[N]`` normalized log weights (``logsumexp = 0``).
        log_Z: scalar running ``log \\hat Z`` (sum of the steps' ``log_Z_increment``).
    """

    particles: ArrayTree
    log_weights: Array
    log_Z: Array


class SMCInfo(NamedTuple):
    """What one :func:`step` did (BlackJAX's ``SMCInfo`` plus ``resampled`` and ``ess``).

    Attributes:
        ancestors: ``[N]`` int32 ancestor indices of the resampling before the move (identity
            when not resampled).
        resampled: bool scalar, whether the step resampled before its move.
        log_Z_increment: ``log sum_i W_{t-1}^{A^i} G_t^i``, this step's factor of ``\\hat Z``.
        ess: ESS of the weights after the reweighting.
        update_info: the move's own info (e.g. the MCMC kernel's infos, leaves ``[N, ...]``).
    """

    ancestors: Array
    resampled: Array
    log_Z_increment: Array
    ess: Array
    update_info: Any


def gather(particles: ArrayTree, ancestors: Array) -> ArrayTree:
    """Resample a particle pytree: ``leaf[ancestors]`` along axis 0 of every leaf."""
    return jax.tree.map(lambda x: jnp.take(x, ancestors, axis=0), particles)


def resample(
    key: PRNGKey,
    particles: ArrayTree,
    log_weights: Array,
    ess_threshold: float | Array,
    scheme: rs.Scheme = rs.systematic,
    mesh: Mesh | None = None,
) -> tuple[ArrayTree, Array, Array, Array]:
    """ESS-triggered resampling of a particle pytree, pure (``lax.cond``), scan/jit-safe.

    As :func:`kernels.smc.resampling.resample_if`, with the gather of the particles inside the
    ``cond`` (on a sharded mesh the particles cross devices only when resampling).

    Args:
        key: PRNG key.
        particles: pytree, leaves ``[N, ...]``.
        log_weights: ``[N]`` log weights.
        ess_threshold: resample when ``ESS < ess_threshold * N``.
        scheme: resampling scheme (conditional for conditional SMC).
        mesh: particle mesh (see :mod:`kernels.smc.sharding`) or ``None``.

    Returns:
        ``(particles, log_weights, ancestors [N], resampled)``; after resampling every log
        weight is ``logsumexp(log_weights) - log N`` (the total mass is kept). A Python-number
        threshold ``>= 1`` (always) or ``<= 0`` (never) skips the ``cond``.
    """
    n = log_weights.shape[0]
    shard = sharding.constrain_fn(mesh)

    def yes(key, x, log_w):
        anc = rs.unchecked(scheme)(key, log_w, n).astype(jnp.int32)
        after = jnp.full_like(log_w, jax.nn.logsumexp(log_w) - jnp.log(n))
        return shard(gather(x, anc)), after, anc

    def no(key, x, log_w):
        return x, log_w, jnp.arange(n, dtype=jnp.int32)

    if isinstance(ess_threshold, int | float):  # static threshold: no cond (same results)
        if ess_threshold >= 1:
            return (*yes(key, particles, log_weights), jnp.asarray(True))
        if ess_threshold <= 0:
            return (*no(key, particles, log_weights), jnp.asarray(False))
    do = rs.should_resample(log_weights, ess_threshold)
    x, log_w, anc = jax.lax.cond(do, yes, no, key, particles, log_weights)
    return x, log_w, anc, do


def clamp_first(particles: ArrayTree, reference_t: ArrayTree, t: Array | None = None) -> ArrayTree:
    """Default ``clamp_fn``: set particle 0 of every leaf to the reference at time ``t``.

    Args:
        particles: pytree, leaves ``[N, ...]``.
        reference_t: the reference at time ``t``, same pytree with leaves ``[...]``.
        t: step index (unused).

    Returns:
        particles with ``leaf[0] = reference_leaf``.
    """
    del t
    return jax.tree.map(lambda x, r: x.at[0].set(jnp.asarray(r, x.dtype)), particles, reference_t)


def check_particles(particles: ArrayTree, n: int, where: str) -> None:
    """Raise a ``ValueError`` naming ``where`` unless every leaf has leading axis ``n``."""
    leaves = jax.tree.leaves(particles)
    bad = [jnp.shape(x) for x in leaves if jnp.ndim(x) == 0 or jnp.shape(x)[0] != n]
    if not leaves or bad:
        raise ValueError(
            f"{where} must return particles as a pytree of arrays with leading axis "
            f"num_particles={n}; got leaves of shapes {[jnp.shape(x) for x in leaves]}"
        )


def check_log_potentials(value: Array, n: int, where: str) -> Array:
    """The ``[N]`` log potentials as an array, or a ``ValueError`` naming ``where``."""
    value = jnp.asarray(value)
    if value.shape != (n,):
        raise ValueError(
            f"the log potentials {where} must have shape (num_particles,) = ({n},), "
            f"got {value.shape}: return one log weight per particle"
        )
    return value


def normalize_with_total(log_w: Array) -> tuple[Array, Array]:
    """``(log_w - logsumexp(log_w), logsumexp(log_w))``."""
    return rs.normalize(log_w), jax.nn.logsumexp(log_w)


def init(
    particles: ArrayTree, log_weights: Array | None = None, *, mesh: Mesh | None = None
) -> SMCState:
    """SMC state at step 0 from ``x_0^{1:N}`` and ``log G_0`` (default 0).

    ``log_weights`` are normalized and ``log_Z = log (1/N) sum_i G_0^i`` (0 for the default).

    Args:
        particles: pytree, leaves ``[N, ...]``.
        log_weights: ``[N]`` unnormalized initial log weights ``log G_0(x_0^i)`` or ``None``.
        mesh: particle mesh (:mod:`kernels.smc.sharding`) or ``None``.

    Returns:
        :class:`SMCState`.
    """
    leaves = jax.tree.leaves(particles)
    n = jnp.shape(leaves[0])[0] if leaves and jnp.ndim(leaves[0]) else 0
    shapes = [jnp.shape(x) for x in leaves]
    if n == 0 or any(len(sh) == 0 or sh[0] != n for sh in shapes):
        raise ValueError(
            "init needs particles as a pytree of arrays with one shared leading axis of size "
            f"num_particles >= 1; got leaves of shapes {shapes}"
        )
    particles = sharding.constrain_fn(mesh)(particles)
    lw0 = jnp.zeros(n) if log_weights is None else log_weights
    lw0 = sharding.replicate_fn(mesh)(check_log_potentials(lw0, n, "at t = 0"))
    log_w, log_Z = normalize_with_total(lw0 - jnp.log(n))
    return SMCState(particles, log_w, log_Z)


def vmap_move(move: Callable[[PRNGKey, ArrayTree, Any], tuple], params_axes: Any = None) -> Move:
    """A move on one particle, ``move(key, x, params) -> (x, info)``, batched over particles.

    The key is split into ``N`` (one per particle) and ``params`` are mapped with
    ``jax.vmap``'s ``in_axes`` ``params_axes``: ``None`` (shared), ``0`` (every leaf
    per particle, leading axis ``N``) or a pytree prefix of ``params`` mixing both, e.g.
    ``{"step_size": 0, "inverse_mass_matrix": None}``.

    Returns:
        ``move(key, particles, params) -> (particles, info)`` with info leaves ``[N, ...]``.
    """

    def batched(key, particles, params):
        n = jnp.shape(jax.tree.leaves(particles)[0])[0]
        _check_per_particle(params, params_axes, n)
        return jax.vmap(move, (0, 0, params_axes))(jax.random.split(key, n), particles, params)

    return batched


def _check_per_particle(params, params_axes, n: int) -> None:
    if params_axes is None:
        return
    axes = jax.tree.broadcast(params_axes, params, is_leaf=lambda x: x is None)
    flat = jax.tree.leaves(axes, is_leaf=lambda x: x is None)
    for (path, value), ax in zip(jax.tree_util.tree_leaves_with_path(params), flat, strict=True):
        if ax is not None and (jnp.ndim(value) == 0 or jnp.shape(value)[0] != n):
            raise ValueError(
                f"per-particle move parameter {jax.tree_util.keystr(path) or 'params'} must "
                f"have leading axis num_particles={n}, got shape {jnp.shape(value)}; give one "
                "value per particle or mark it shared (axis None)"
            )


def step(
    key: PRNGKey,
    state: SMCState,
    move_fn: Move,
    log_weight_fn: LogWeightFn | None,
    *,
    move_params: Any = None,
    ess_threshold: float | Array = 0.5,
    resampling: rs.Scheme = rs.systematic,
    reference: ArrayTree | None = None,
    clamp_fn: Callable[[ArrayTree, ArrayTree], ArrayTree] = clamp_first,
    conditional_resampling: rs.Scheme | None = None,
    mesh: Mesh | None = None,
) -> tuple[SMCState, SMCInfo]:
    """One SMC step: resample (ESS-triggered), move, reweight; pure, jit/scan/vmap-safe.

    Args:
        key: PRNG key (split into a resampling and a move key).
        state: :class:`SMCState`.
        move_fn: ``(key, particles, move_params) -> (particles, update_info)``, batched over
            particles (:func:`vmap_move` batches a one-particle move, with per-particle
            parameters). Fused form when ``log_weight_fn`` is ``None``: it returns
            ``(particles, log_potentials [N], update_info)`` and must itself put the
            reference in particle 0 (``clamp_fn`` is then unused).
        log_weight_fn: ``(prev_particles, particles) -> [N]`` log potentials ``log G_t``
            (``prev`` is the resampled ``x_{t-1}`` aligned with ``x_t``), or ``None``.
        move_params: passed to ``move_fn`` as is (shared or per particle: see
            :func:`vmap_move`).
        ess_threshold: resample when ``ESS < ess_threshold * N``; ``1`` every step, ``0`` never.
        resampling: unconditional scheme (:mod:`kernels.smc.resampling`).
        reference: conditional SMC: this step's reference ``x_t^*`` (leaves ``[...]``), or
            ``None`` for plain SMC.
        clamp_fn: ``(particles, reference_t) -> particles`` (default :func:`clamp_first`).
        conditional_resampling: scheme keeping ancestor 0 (default
            ``resampling.conditional(resampling)``).
        mesh: shard the particles over this mesh (:mod:`kernels.smc.sharding`).

    Returns:
        ``(state, info)``: the new :class:`SMCState` and an :class:`SMCInfo`.
    """
    k_res, k_move = jax.random.split(key)
    return step_with_keys(
        k_res,
        k_move,
        state,
        move_fn,
        log_weight_fn,
        move_params=move_params,
        ess_threshold=ess_threshold,
        resampling=resampling,
        reference=reference,
        clamp_fn=clamp_fn,
        conditional_resampling=conditional_resampling,
        mesh=mesh,
    )


def step_with_keys(
    resample_key: PRNGKey,
    move_key: PRNGKey,
    state: SMCState,
    move_fn: Move,
    log_weight_fn: LogWeightFn | None,
    *,
    move_params: Any = None,
    ess_threshold: float | Array = 0.5,
    resampling: rs.Scheme = rs.systematic,
    reference: ArrayTree | None = None,
    clamp_fn: Callable[[ArrayTree, ArrayTree], ArrayTree] = clamp_first,
    conditional_resampling: rs.Scheme | None = None,
    mesh: Mesh | None = None,
) -> tuple[SMCState, SMCInfo]:
    """:func:`step` with its two keys given (a driver that splits its keys its own way)."""
    n = state.log_weights.shape[0]
    conditional = reference is not None
    scheme = resampling
    if conditional:
        scheme = conditional_resampling or rs.conditional(resampling)
    x, log_w, anc, did = resample(
        resample_key, state.particles, state.log_weights, ess_threshold, scheme, mesh
    )
    if log_weight_fn is None:
        out = move_fn(move_key, x, move_params)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise ValueError(
                "a fused move (log_weight_fn=None) must return (particles, log_potentials, "
                "update_info)"
            )
        x_new, log_g, update_info = out
    else:
        out = move_fn(move_key, x, move_params)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ValueError(
                "move_fn must return (particles, update_info); use () as the info of a move "
                "that has none"
            )
        x_new, update_info = out
        if conditional:
            x_new = clamp_fn(x_new, reference)
        log_g = log_weight_fn(x, x_new)
    check_particles(x_new, n, "the move (propose_fn / move_fn)")
    x_new = sharding.constrain_fn(mesh)(x_new)
    log_g = sharding.replicate_fn(mesh)(check_log_potentials(log_g, n, "of a step (t >= 1)"))
    log_w, inc = normalize_with_total(log_w + log_g)
    new = SMCState(x_new, log_w, state.log_Z + inc)
    return new, SMCInfo(anc, did, inc, rs.ess(log_w), update_info)
