r"""Tempered SMC (and AIS) over a path ``pi_beta`` from a base ``pi_0`` to ``pi_0 * L``, with any
BlackJAX-style MCMC move.

Targets ``log pi_beta(x) = path(log pi_0(x), log pi_0(x) + log L(x), beta)`` (geometric by
default: ``log pi_0 + beta log L``). Step ``t = 1..K`` of the driver :func:`kernels.smc.sequential.run`:
resample (ESS-triggered), move ``x_t ~ K_{beta_{t-1}}^m(x_{t-1}, .)`` with ``m`` MCMC steps
invariant for ``pi_{beta_{t-1}}``, reweight by ``log pi_{beta_t}(x_t) - log pi_{beta_{t-1}}(x_t)``
(Neal 2001; Del Moral, Doucet and Jasra 2006). ``N = 1`` with no resampling is AIS. The final
weighted particles target ``pi_1 / Z``, and ``log_Z`` estimates ``log int pi_0 L``.

Conditional SMC / reverse AIS (Grosse, Ghahramani and Adams 2015, "BDMC"): from an exact
posterior draw ``x_K``, :func:`reference_path` runs the chain backwards
``x_{t-1} ~ K_{beta_{t-1}}^m(x_t, .)`` (valid for reversible moves such as HMC and MH);
passing that path as ``reference`` gives a stochastic upper bound of ``log Z``.

The move is a module or object with BlackJAX's low-level API: ``init(position, logdensity_fn)``
and ``build_kernel()`` returning ``kernel(key, state, logdensity_fn, **params)`` (e.g.
``blackjax.hmc``, ``blackjax.mala``, ``kernels.involutive.hmc``). The state is re-initialized
at each temperature (one extra density evaluation per particle per temperature). Kernel
parameters are shared, or per particle for the names in ``per_particle_params`` (leading axis
``N``).

:func:`run` (through :func:`kernels.smc.sequential.run`) and :func:`adaptive` are loops over
:func:`kernels.smc.base.step`; :func:`tempered_move` is their move at one temperature, for a
loop of your own (its info is the kernel's, e.g. ``HMCInfo``).
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kernels.smc import annealing, base, sequential, sharding
from kernels.smc import resampling as rs
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = [
    "run",
    "reference_path",
    "adaptive",
    "AdaptiveResult",
    "mcmc_move",
    "mcmc_update",
    "tempered_move",
]


def _check_kernel(kernel: Any) -> None:
    if not (hasattr(kernel, "init") and hasattr(kernel, "build_kernel")):
        raise TypeError(
            "kernel must have BlackJAX's low-level API `init(position, logdensity_fn)` and "
            f"`build_kernel()` (e.g. blackjax.hmc, kernels.involutive.hmc); got {kernel!r}"
        )


def mcmc_update(kernel: Any, num_mcmc_steps: int) -> Callable:
    """``update(key, position, logdensity_fn, params) -> (position, info)``: ``num_mcmc_steps``
    steps of ``kernel`` from ``kernel.init(position, logdensity_fn)``, on one particle.

    As BlackJAX's ``update_and_take_last``: ``info`` is the kernel's info of every step, leaves
    ``[num_mcmc_steps, ...]``; ``params`` is the dict of keyword parameters of the kernel step.
    Batch it over particles (shared or per-particle ``params``) with
    :func:`kernels.smc.base.vmap_move` after fixing ``logdensity_fn``.
    """
    _check_kernel(kernel)
    step = kernel.build_kernel()

    def update(key, position, logdensity_fn, params):
        state = kernel.init(position, logdensity_fn)

        def body(s, k):
            return step(k, s, logdensity_fn, **params)

        state, info = jax.lax.scan(body, state, jax.random.split(key, num_mcmc_steps))
        return state.position, info

    return update


def mcmc_move(kernel: Any, kernel_params: dict | None, num_mcmc_steps: int) -> Callable:
    """``move(key, position, logdensity_fn) -> position``: ``num_mcmc_steps`` steps of ``kernel``.

    Args:
        kernel: BlackJAX-style module/object with ``init`` and ``build_kernel``.
        kernel_params: keyword parameters of the kernel step (``step_size``, ...).
        num_mcmc_steps: steps per call.

    Returns:
        a function on one particle (vmap it over particles).
    """
    update = mcmc_update(kernel, num_mcmc_steps)
    params = dict(kernel_params or {})

    def move(key, position, logdensity_fn):
        return update(key, position, logdensity_fn, params)[0]

    return move


def tempered_move(
    kernel: Any,
    logdensity_fn: Callable,
    num_mcmc_steps: int = 1,
    per_particle_params: Sequence[str] = (),
) -> base.Move:
    """The batched move of a :func:`kernels.smc.base.step` at one temperature:
    ``move(key, particles, kernel_params) -> (particles, info)``, ``num_mcmc_steps`` steps of
    ``kernel`` invariant for ``logdensity_fn`` on every particle (info leaves
    ``[N, num_mcmc_steps, ...]``); the entries of ``kernel_params`` named in
    ``per_particle_params`` have a leading particle axis, the others are shared."""
    update = mcmc_update(kernel, num_mcmc_steps)
    per = tuple(per_particle_params)

    def one(k, x, params):
        return update(k, x, logdensity_fn, params)

    def move(key, particles, kernel_params):
        params = dict(kernel_params or {})
        missing = [name for name in per if name not in params]
        if missing:
            raise ValueError(
                f"per_particle_params names {missing}, which are not in kernel_params "
                f"(keys {sorted(params)})"
            )
        axes = {name: (0 if name in per else None) for name in params}
        return base.vmap_move(one, axes if per else None)(key, particles, params)

    return move


def _densities(log_prior_fn, log_likelihood_fn, path):
    def log_pi(x, beta):
        lp = log_prior_fn(x)
        return path(lp, lp + log_likelihood_fn(x), beta)

    return log_pi


def run(
    key: PRNGKey,
    sample_prior_fn: Callable[[PRNGKey], ArrayTree],
    log_prior_fn: Callable[[ArrayTree], Array],
    log_likelihood_fn: Callable[[ArrayTree], Array],
    betas: Array,
    kernel: Any,
    num_particles: int,
    *,
    kernel_params: dict | None = None,
    num_mcmc_steps: int = 1,
    path: Callable = annealing.geometric,
    resampling: rs.Scheme = rs.systematic,
    ess_threshold: float = 0.5,
    reference: ArrayTree | None = None,
    mesh: Mesh | None = None,
    per_particle_params: Sequence[str] = (),
    per_temperature_params: Sequence[str] = (),
    return_update_info: bool = False,
) -> sequential.SMCResult:
    """Tempered SMC over a fixed schedule (AIS when ``ess_threshold = 0``).

    Args:
        key: PRNG key.
        sample_prior_fn: ``key -> x`` one draw from ``pi_0`` (vmapped over particles).
        log_prior_fn: ``x -> log pi_0(x)`` (normalized base density).
        log_likelihood_fn: ``x -> log L(x)``.
        betas: ``[K + 1]`` schedule from 0 to 1 (frozen for bounds).
        kernel: the MCMC move (BlackJAX low-level API).
        num_particles: ``N``.
        kernel_params: keyword parameters of the kernel step.
        num_mcmc_steps: MCMC steps per temperature.
        path: ``(log_base, log_target, beta) -> log pi_beta``, see :mod:`kernels.smc.annealing`.
        resampling: resampling scheme.
        ess_threshold: relative ESS threshold.
        reference: ``[K + 1, ...]`` reference path (conditional SMC / reverse AIS upper bound).
        mesh: shard the particles over this mesh (see :mod:`kernels.smc.sharding`).
        per_particle_params: names of the ``kernel_params`` entries given per particle
            (leading axis ``N``, e.g. one step size per particle); the others are shared.
        per_temperature_params: names of the ``kernel_params`` entries given per move (leading
            axis ``K``: entry ``t - 1`` is the move at ``beta_{t-1}``, e.g. step sizes tuned
            per temperature); named in both lists, an entry is ``[K, N, ...]``. Pass the same
            to :func:`reference_path` for the reverse chain.
        return_update_info: keep the MCMC infos of every move in ``update_info`` (leaves
            ``[K, N, num_mcmc_steps, ...]``).

    Returns:
        :class:`kernels.smc.sequential.SMCResult`; ``particles`` are the final positions.
    """
    betas = jnp.asarray(betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(
            f"betas must be a 1-d schedule 0 = b_0 < ... < b_K = 1, got shape {betas.shape}"
        )
    log_pi = _densities(log_prior_fn, log_likelihood_fn, path)
    _check_kernel(kernel)
    params = dict(kernel_params or {})
    at_move = _per_temperature(params, per_temperature_params, betas.shape[0] - 1)

    def init_fn(k, n):
        return jax.vmap(sample_prior_fn)(jax.random.split(k, n))

    def propose_fn(k, x, t):  # the move of base.step at beta_{t-1}
        ld = lambda z: log_pi(z, betas[t - 1])  # noqa: E731
        move = tempered_move(kernel, ld, num_mcmc_steps, per_particle_params)
        x_new, upd = move(k, x, at_move(t - 1))
        return (x_new, upd) if return_update_info else x_new

    def log_weight_fn(xp, x, t):
        def inc(z):  # one prior and one likelihood evaluation per particle
            lp = log_prior_fn(z)
            lt = lp + log_likelihood_fn(z)
            return path(lp, lt, betas[t]) - path(lp, lt, betas[t - 1])

        return jax.vmap(inc)(x)

    return sequential.run(
        key,
        init_fn,
        propose_fn,
        log_weight_fn,
        betas.shape[0] - 1,
        num_particles,
        resampling=resampling,
        ess_threshold=ess_threshold,
        reference=reference,
        mesh=mesh,
        return_update_info=return_update_info,
    )


def _per_temperature(params: dict, names: Sequence[str], num_moves: int) -> Callable:
    """``j -> params`` with the entries named in ``names`` taken at move ``j`` (checked to have
    a leading axis of ``num_moves``)."""
    names = tuple(names)
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(
            f"per_temperature_params names {missing}, which are not in kernel_params "
            f"(keys {sorted(params)})"
        )
    for name in names:
        shape = jnp.shape(params[name])
        if not shape or shape[0] != num_moves:
            raise ValueError(
                f"kernel_params[{name!r}] is per temperature, so it needs a leading axis of "
                f"K = {num_moves} (one entry per move, len(betas) - 1), got shape {shape}"
            )

    def at(j):
        return {k: (v[j] if k in names else v) for k, v in params.items()}

    return at


def reference_path(
    key: PRNGKey,
    position: ArrayTree,
    log_prior_fn: Callable,
    log_likelihood_fn: Callable,
    betas: Array,
    kernel: Any,
    *,
    kernel_params: dict | None = None,
    num_mcmc_steps: int = 1,
    path: Callable = annealing.geometric,
    per_temperature_params: Sequence[str] = (),
    identity_first_move: bool = False,
) -> ArrayTree:
    """Backward chain from an exact target draw ``x_K``: ``x_{t-1} ~ K_{beta_{t-1}}^m(x_t)``.

    ``log_prior_fn``, ``log_likelihood_fn``, ``betas``, ``kernel``, ``kernel_params``,
    ``num_mcmc_steps``, ``path`` and ``per_temperature_params`` are as in :func:`run` (same
    values, so the reverse chain matches the forward one: the move from ``x_t`` to ``x_{t-1}``
    uses the parameters of forward step ``t``, entry ``t - 1`` of a per-temperature one).

    Args:
        key: PRNG key.
        position: ``x_K``, one exact draw from ``pi_1 / Z``.
        identity_first_move: the forward run keeps its exact prior draws at step 1 (its move
            at ``beta_0`` is the identity, as in ``ppl.TemperedSMC``), so ``x_0 = x_1`` and
            entry 0 of a per-temperature parameter is not used.

    Returns:
        pytree with leaves ``[K + 1, ...]`` (time first), the ``reference`` of :func:`run`.
    """
    betas = jnp.asarray(betas)
    log_pi = _densities(log_prior_fn, log_likelihood_fn, path)
    update = mcmc_update(kernel, num_mcmc_steps)
    num_steps = betas.shape[0] - 1
    at_move = _per_temperature(dict(kernel_params or {}), per_temperature_params, num_steps)

    def body(x, inp):
        k, t = inp
        x_prev = update(k, x, lambda z: log_pi(z, betas[t - 1]), at_move(t - 1))[0]
        return x_prev, x_prev

    last = 1 if identity_first_move else 0
    ts = jnp.arange(num_steps, last, -1)
    _, xs = jax.lax.scan(body, position, (jax.random.split(key, num_steps - last), ts))
    xs = jax.tree.map(lambda a: a[::-1], xs)  # x_last .. x_{K-1}

    def stack(a, x_k):
        x_k = jnp.asarray(x_k)[None]
        if identity_first_move:  # x_0 = x_1 (= x_K when K = 1)
            a = jnp.concatenate([a[:1] if a.shape[0] else x_k, a])
        return jnp.concatenate([a, x_k])

    return jax.tree.map(stack, xs, position)


class AdaptiveResult(NamedTuple):
    """Output of :func:`adaptive`.

    Attributes:
        particles: final particles.
        log_weights: ``[N]`` final normalized log weights.
        log_Z: log Z estimate (not a valid bound: the schedule depends on the particles).
        betas: ``[max_num_steps + 1]`` buffer, valid up to ``num_steps`` then padded with 1.
        num_steps: ``K``.
        ess: ``[max_num_steps]`` ESS after each reweighting (0 after ``K``).
    """

    particles: ArrayTree
    log_weights: Array
    log_Z: Array
    betas: Array
    num_steps: Array
    ess: Array


def adaptive(
    key: PRNGKey,
    sample_prior_fn: Callable,
    log_prior_fn: Callable,
    log_likelihood_fn: Callable,
    kernel: Any,
    num_particles: int,
    *,
    target_ess: float = 0.5,
    kernel_params: dict | None = None,
    num_mcmc_steps: int = 1,
    path: Callable = annealing.geometric,
    resampling: rs.Scheme = rs.systematic,
    ess_threshold: float = 0.5,
    max_num_steps: int = 200,
    mesh: Mesh | None = None,
    per_particle_params: Sequence[str] = (),
) -> AdaptiveResult:
    """ESS-adaptive tempered SMC (pilot run): ``beta_t`` by bisection so that the ESS after
    reweighting is ``target_ess * N`` (:func:`kernels.smc.annealing.next_beta_bisection`).

    Freeze the schedule with ``annealing.freeze(result.betas, result.num_steps)`` and pass it
    to :func:`run` for runs whose ``log_Z`` must be unbiased (bounds).

    ``key``, ``sample_prior_fn``, ``log_prior_fn``, ``log_likelihood_fn``, ``kernel``,
    ``num_particles``, ``kernel_params``, ``num_mcmc_steps``, ``path``, ``resampling``,
    ``ess_threshold``, ``mesh`` and ``per_particle_params`` are as in :func:`run`. A
    ``lax.while_loop`` of :func:`kernels.smc.base.step` whose fused move runs the MCMC kernel at
    ``beta_t``, then picks ``beta_{t+1}`` and returns the increments.

    Args:
        target_ess: the conditional ESS of every reweighting, relative, in ``(0, 1)``.
        max_num_steps: buffer size; the last step jumps to ``beta = 1``.

    Returns:
        :class:`AdaptiveResult`.
    """
    log_pi = _densities(log_prior_fn, log_likelihood_fn, path)
    _check_kernel(kernel)
    params = dict(kernel_params or {})
    n = num_particles
    if mesh is not None:
        sharding.check_divisible(n, mesh)
    shard, replicate = sharding.constrain_fn(mesh), sharding.replicate_fn(mesh)
    k0, key = jax.random.split(key)
    x0 = shard(jax.vmap(sample_prior_fn)(jax.random.split(k0, n)))
    betas0 = jnp.ones(max_num_steps + 1).at[0].set(0.0)
    ess0 = jnp.zeros(max_num_steps)
    state0 = base.SMCState(x0, replicate(jnp.full(n, -jnp.log(n))), jnp.zeros(()))

    def cond(c):
        state, betas, t, ess, key = c
        return (betas[t] < 1.0) & (t < max_num_steps)

    def body(c):
        state, betas, t, ess, key = c
        key, k_res, k_move = jax.random.split(key, 3)
        beta = betas[t]
        # the weights the move's CESS sees: those after the step's (deterministic) ESS trigger
        log_w_cess = _after_resampling(state.log_weights, ess_threshold)
        mcmc = tempered_move(kernel, lambda z: log_pi(z, beta), num_mcmc_steps, per_particle_params)

        def move(k, x, p):  # fused: MCMC at beta, then the next beta and the increments
            x, info = mcmc(k, x, p)
            x = shard(x)
            # prior and target log densities once per particle; the bisection reuses them
            lp = jax.vmap(log_prior_fn)(x)
            lt = lp + jax.vmap(log_likelihood_fn)(x)
            lp, lt = replicate((lp, lt))
            inc_fn = lambda b: path(lp, lt, b) - path(lp, lt, beta)  # noqa: E731
            nb = annealing.next_beta_bisection(log_w_cess, inc_fn, beta, target_ess)
            nb = jnp.where(t + 1 == max_num_steps, 1.0, nb)
            return x, inc_fn(nb), (info, nb)

        state, info = base.step_with_keys(
            k_res,
            k_move,
            state,
            move,
            None,
            move_params=params,
            ess_threshold=ess_threshold,
            resampling=resampling,
            mesh=mesh,
        )
        nb = info.update_info[1]
        return state, betas.at[t + 1].set(nb), t + 1, ess.at[t].set(info.ess), key

    state, betas, t, ess, _ = jax.lax.while_loop(
        cond, body, (state0, betas0, jnp.asarray(0), ess0, key)
    )
    return AdaptiveResult(state.particles, state.log_weights, state.log_Z, betas, t, ess)


def _after_resampling(log_weights: Array, ess_threshold: float | Array) -> Array:
    """The log weights after :func:`kernels.smc.base.resample`'s ESS trigger (uniform at the
    same total if it fires): the trigger depends on the weights only, not on the key."""
    n = log_weights.shape[0]
    after = jnp.full_like(log_weights, jax.nn.logsumexp(log_weights) - jnp.log(n))
    return jnp.where(rs.should_resample(log_weights, ess_threshold), after, log_weights)
