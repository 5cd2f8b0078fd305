r"""Generic SMC driver for a Feynman-Kac model, with conditional SMC, as one ``lax.scan`` over
:func:`kernels.smc.base.step`.

Model (Del Moral, 2004; Chopin and Papaspiliopoulos, 2020, ch. 5): for ``t = 0..T``

$$x_0 \sim M_0, \quad x_t \sim M_t(x_{t-1}, \cdot), \qquad
\gamma_T(x_{0:T}) = M_0(x_0) G_0(x_0) \prod_{t=1}^T M_t(x_{t-1}, x_t) G_t(x_{t-1}, x_t),$$

and ``Z = \int \gamma_T``. SMC propagates ``N`` weighted particles; before each step it resamples
(ESS-triggered) on the accumulated weights, then proposes and reweights. The estimate

$$\hat Z = \prod_{t=0}^{T} \sum_i W_{t-1}^i G_t^i$$

(``W`` normalized weights after the optional resampling, ``W_{-1} = 1/N``) is unbiased,
``E[\hat Z] = Z``, so ``E[\log \hat Z] \le \log Z`` (a stochastic lower bound).

Conditional SMC (Andrieu, Doucet and Holenstein, 2010): particle 0 is clamped to a reference
trajectory ``x^*_{0:T}`` (``clamp_fn`` after each proposal) and keeps its ancestor (conditional
resampling); the others are resampled from all weights. If ``x^*_{0:T}`` is an exact draw from
the normalized ``\gamma_T / Z`` then ``E[1 / \hat Z] = 1 / Z``, so ``E[\log \hat Z] \ge \log Z``
(a stochastic upper bound; Wang et al. 2020, Zhao et al. 2024, sec. 4).

Particles are arbitrary pytrees with the particle axis first (an LM particle may carry a KV
cache: resampling is a gather along axis 0 of every leaf).

Example (a Gaussian random walk observed through a likelihood ``g``)::

    res = run(key,
              init_fn=lambda k, n: jax.random.normal(k, (n,)),
              propose_fn=lambda k, x, t: x + jax.random.normal(k, x.shape),
              log_weight_fn=lambda xp, x, t: log_g(x, y[t]),
              num_steps=T, num_particles=1000)
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kernels.smc import base, sharding
from kernels.smc import resampling as rs
from kernels.smc.base import clamp_first, gather, resample
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = ["SMCResult", "run", "resample", "gather", "broadcast", "clamp_first"]


class SMCResult(NamedTuple):
    """Output of :func:`run`.

    Attributes:
        particles: final particles (pytree, leaves ``[N, ...]``).
        log_weights: ``[N]`` final normalized log weights (``logsumexp = 0``).
        log_Z: scalar log of the unbiased estimate ``\\hat Z`` (conditional: upper-bound estimate).
        log_Z_increments: ``[T + 1]`` ``log sum_i W_{t-1}^i G_t^i`` at each step
            (``log_Z = sum``).
        ess: ``[T + 1]`` ESS of the weights after each reweighting.
        resampled: ``[T]`` bool, whether resampling happened before step ``t = 1..T``.
        ancestors: ``[T, N]`` int32 ancestor indices before each step ``t = 1..T``.
        update_info: with ``return_update_info=True``, the moves' own infos stacked over the
            steps (leaves ``[T, N, ...]``, as BlackJAX's ``SMCInfo.update_info`` at each step);
            otherwise ``None`` (not kept: it costs memory of order ``T N``).
    """

    particles: ArrayTree
    log_weights: Array
    log_Z: Array
    log_Z_increments: Array
    ess: Array
    resampled: Array
    ancestors: Array
    update_info: Any = None


def broadcast(particles: ArrayTree, num_particles: int) -> ArrayTree:
    """Repeat a batch-1 pytree (e.g. one prompt's prefill) to ``num_particles`` along axis 0
    (scalar leaves are kept)."""
    return jax.tree.map(
        lambda x: jnp.broadcast_to(x, (num_particles,) + x.shape[1:]) if jnp.ndim(x) else x,
        particles,
    )


def run(
    key: PRNGKey,
    init_fn: Callable[[PRNGKey, int], ArrayTree],
    propose_fn: Callable[[PRNGKey, ArrayTree, Array], ArrayTree],
    log_weight_fn: Callable[[ArrayTree, ArrayTree, Array], Array] | None,
    num_steps: int,
    num_particles: int,
    *,
    init_log_weight_fn: Callable[[ArrayTree], Array] | None = None,
    resampling: rs.Scheme = rs.systematic,
    ess_threshold: float | Array = 0.5,
    reference: ArrayTree | None = None,
    clamp_fn: Callable[[ArrayTree, ArrayTree, Array], ArrayTree] = clamp_first,
    conditional_resampling: rs.Scheme | None = None,
    mesh: Mesh | None = None,
    return_update_info: bool = False,
) -> SMCResult:
    """Run SMC (or conditional SMC when ``reference`` is given); jit-compatible.

    A ``lax.scan`` of :func:`kernels.smc.base.step` (write the loop yourself to see or change
    what happens between steps). Step ``t = 1..T``: (1) resample on the current weights if
    ``ESS < ess_threshold * N``; (2) ``x_t = propose_fn(key, x_{t-1}, t)`` (vectorized over
    particles); (3) with a reference,
    ``x_t = clamp_fn(x_t, reference_t, t)``; (4) ``log w += log_weight_fn(x_{t-1}, x_t, t)``.
    Step 0: ``x_0 = init_fn(key, N)`` (clamped), ``log w = init_log_weight_fn(x_0)`` (default 0).

    Args:
        key: PRNG key.
        init_fn: ``(key, N) -> particles`` (pytree, leaves ``[N, ...]``), draws from ``M_0``.
        propose_fn: ``(key, particles, t) -> particles``, draws from ``M_t``.
        log_weight_fn: ``(prev_particles, particles, t) -> [N]`` log potentials ``log G_t``
            (``prev`` is the resampled ``x_{t-1}`` aligned with ``x_t``). ``None`` selects the
            *fused* form: ``propose_fn`` is then a step ``(key, particles, t) -> (particles,
            log G_t)``, and with a reference it is called as ``(key, particles, t,
            reference_t)`` and must put ``reference_t`` in particle 0 before weighting
            (``clamp_fn`` is then unused). Use it when proposal and weight share work (an LM
            forward pass).
        num_steps: ``T`` (static); ``T = 0`` is importance sampling from ``M_0``.
        num_particles: ``N`` (static).
        init_log_weight_fn: ``particles -> [N]``, ``log G_0`` (default zeros).
        resampling: unconditional scheme from :mod:`kernels.smc.resampling`.
        ess_threshold: resample when ``ESS < ess_threshold * N``; ``1`` every step, ``0`` never.
        reference: conditional SMC reference trajectory: pytree with leaves ``[T + 1, ...]``
            (time first); ``None`` for plain SMC.
        clamp_fn: ``(particles, reference_t, t) -> particles`` putting the reference in
            particle 0 (default :func:`clamp_first`).
        conditional_resampling: scheme keeping ancestor 0 (default
            ``resampling.conditional(resampling)``).
        mesh: shard the particles over this 1-d mesh (``sharding.particle_mesh()``): particles
            split on their first axis, log weights replicated, resampling computed redundantly
            on every device (see :mod:`kernels.smc.sharding`); ``N`` must be divisible by the
            number of devices. The same key gives the same result as ``mesh=None``.
        return_update_info: ``propose_fn`` then returns its move's info as a last element
            (``(particles, info)``, fused ``(particles, log G_t, info)``, leaves ``[N, ...]``),
            kept for every step in :attr:`SMCResult.update_info`.

    Returns:
        :class:`SMCResult`.
    """
    n = int(num_particles)
    if n < 1 or int(num_steps) < 0:
        raise ValueError(f"need num_particles >= 1 and num_steps >= 0, got {n}, {num_steps}")
    if num_steps > 0 and propose_fn is None:
        raise ValueError("propose_fn (or a fused step function) is required when num_steps > 0")
    if mesh is not None:
        sharding.check_divisible(n, mesh)
    fused = log_weight_fn is None
    conditional = reference is not None
    shard, replicate = sharding.constrain_fn(mesh), sharding.replicate_fn(mesh)

    def ref_at(t):
        return jax.tree.map(lambda r: r[t], reference)

    k_init, k_steps = jax.random.split(key)
    k0, _ = jax.random.split(k_init)
    x0 = init_fn(k0, n)
    base.check_particles(x0, n, "init_fn")
    if conditional:
        x0 = clamp_fn(x0, ref_at(0), jnp.asarray(0))
    x0 = shard(x0)
    lw0 = jnp.zeros(n) if init_log_weight_fn is None else init_log_weight_fn(x0)
    lw0 = replicate(base.check_log_potentials(lw0, n, "at step t = 0"))
    state0 = base.init(x0, lw0, mesh=mesh)

    def body(state, inp):
        key, t = inp
        ref_t = ref_at(t) if conditional else None
        if fused:
            args = (ref_t,) if conditional else ()

            def move(k, x, _):
                out = propose_fn(k, x, t, *args)
                x_new, log_g, upd = out if return_update_info else (*out, ())
                base.check_particles(x_new, n, "propose_fn")
                return x_new, log_g, upd

            weight = None
        else:

            def move(k, x, _):
                out = propose_fn(k, x, t)
                x_new, upd = out if return_update_info else (out, ())
                base.check_particles(x_new, n, "propose_fn")
                return x_new, upd

            def weight(xp, x):
                return log_weight_fn(xp, x, t)

        state, info = base.step(
            key,
            state,
            move,
            weight,
            ess_threshold=ess_threshold,
            resampling=resampling,
            reference=ref_t,
            clamp_fn=lambda x, r: clamp_fn(x, r, t),
            conditional_resampling=conditional_resampling,
            mesh=mesh,
        )
        upd = info.update_info if return_update_info else None
        return state, (info.log_Z_increment, info.ess, info.resampled, info.ancestors, upd)

    inc0 = state0.log_Z
    if num_steps == 0:  # importance sampling from M_0
        state, incs, esss = state0, jnp.zeros((0,)), jnp.zeros((0,))
        did, anc = jnp.zeros((0,), bool), jnp.zeros((0, n), jnp.int32)
        upds = None
    else:
        keys = jax.random.split(k_steps, num_steps)
        ts = jnp.arange(1, num_steps + 1)
        state, (incs, esss, did, anc, upds) = jax.lax.scan(body, state0, (keys, ts))
    incs = jnp.concatenate([inc0[None], incs.astype(inc0.dtype)])
    return SMCResult(
        particles=state.particles,
        log_weights=state.log_weights,
        log_Z=jnp.sum(incs),
        log_Z_increments=incs,
        ess=jnp.concatenate([rs.ess(lw0)[None], esss.astype(inc0.dtype)]),
        resampled=did,
        ancestors=anc.reshape(num_steps, n),
        update_info=upds,
    )
