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
at each temperature (one extra density evaluation per particle per temperature).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kernels.smc import annealing, sequential, sharding
from kernels.smc import resampling as rs
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = ["run", "reference_path", "adaptive", "AdaptiveResult", "mcmc_move"]


def mcmc_move(kernel: Any, kernel_params: dict | None, num_mcmc_steps: int) -> Callable:
    """``move(key, position, logdensity_fn) -> position``: ``num_mcmc_steps`` steps of ``kernel``.

    Args:
        kernel: BlackJAX-style module/object with ``init`` and ``build_kernel``.
        kernel_params: keyword parameters of the kernel step (``step_size``, ...).
        num_mcmc_steps: steps per call.

    Returns:
        a function on one particle (vmap it over particles).
    """
    if not (hasattr(kernel, "init") and hasattr(kernel, "build_kernel")):
        raise TypeError(
            "kernel must have BlackJAX's low-level API `init(position, logdensity_fn)` and "
            f"`build_kernel()` (e.g. blackjax.hmc, kernels.involutive.hmc); got {kernel!r}"
        )
    step = kernel.build_kernel()
    params = dict(kernel_params or {})

    def move(key, position, logdensity_fn):
        state = kernel.init(position, logdensity_fn)

        def body(s, k):
            s, _ = step(k, s, logdensity_fn, **params)
            return s, None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, num_mcmc_steps))
        return state.position

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

    Returns:
        :class:`kernels.smc.sequential.SMCResult`; ``particles`` are the final positions.
    """
    betas = jnp.asarray(betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(
            f"betas must be a 1-d schedule 0 = b_0 < ... < b_K = 1, got shape {betas.shape}"
        )
    log_pi = _densities(log_prior_fn, log_likelihood_fn, path)
    move = mcmc_move(kernel, kernel_params, num_mcmc_steps)

    def init_fn(k, n):
        return jax.vmap(sample_prior_fn)(jax.random.split(k, n))

    def propose_fn(k, x, t):
        ld = lambda z: log_pi(z, betas[t - 1])
        return jax.vmap(move, (0, 0, None))(jax.random.split(k, num_particles), x, ld)

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
    )


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
) -> ArrayTree:
    """Backward chain from an exact target draw ``x_K``: ``x_{t-1} ~ K_{beta_{t-1}}^m(x_t)``.

    ``log_prior_fn``, ``log_likelihood_fn``, ``betas``, ``kernel``, ``kernel_params``,
    ``num_mcmc_steps`` and ``path`` are as in :func:`run` (same values, so the reverse chain
    matches the forward one).

    Args:
        key: PRNG key.
        position: ``x_K``, one exact draw from ``pi_1 / Z``.

    Returns:
        pytree with leaves ``[K + 1, ...]`` (time first), the ``reference`` of :func:`run`.
    """
    betas = jnp.asarray(betas)
    log_pi = _densities(log_prior_fn, log_likelihood_fn, path)
    move = mcmc_move(kernel, kernel_params, num_mcmc_steps)
    num_steps = betas.shape[0] - 1

    def body(x, inp):
        k, t = inp
        x_prev = move(k, x, lambda z: log_pi(z, betas[t - 1]))
        return x_prev, x_prev

    ts = jnp.arange(num_steps, 0, -1)
    _, xs = jax.lax.scan(body, position, (jax.random.split(key, num_steps), ts))
    xs = jax.tree.map(lambda a: a[::-1], xs)  # x_0 .. x_{K-1}
    return jax.tree.map(lambda a, b: jnp.concatenate([a, jnp.asarray(b)[None]]), xs, position)


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
) -> AdaptiveResult:
    """ESS-adaptive tempered SMC (pilot run): ``beta_t`` by bisection so that the ESS after
    reweighting is ``target_ess * N`` (:func:`kernels.smc.annealing.next_beta_bisection`).

    Freeze the schedule with ``annealing.freeze(result.betas, result.num_steps)`` and pass it
    to :func:`run` for runs whose ``log_Z`` must be unbiased (bounds).

    ``key``, ``sample_prior_fn``, ``log_prior_fn``, ``log_likelihood_fn``, ``kernel``,
    ``num_particles``, ``kernel_params``, ``num_mcmc_steps``, ``path``, ``resampling``,
    ``ess_threshold`` and ``mesh`` are as in :func:`run`.

    Args:
        target_ess: the conditional ESS of every reweighting, relative, in ``(0, 1)``.
        max_num_steps: buffer size; the last step jumps to ``beta = 1``.

    Returns:
        :class:`AdaptiveResult`.
    """
    log_pi = _densities(log_prior_fn, log_likelihood_fn, path)
    move = mcmc_move(kernel, kernel_params, num_mcmc_steps)
    n = num_particles
    if mesh is not None:
        sharding.check_divisible(n, mesh)
    shard, replicate = sharding.constrain_fn(mesh), sharding.replicate_fn(mesh)
    k0, key = jax.random.split(key)
    x0 = shard(jax.vmap(sample_prior_fn)(jax.random.split(k0, n)))
    betas0 = jnp.ones(max_num_steps + 1).at[0].set(0.0)
    ess0 = jnp.zeros(max_num_steps)
    log_w0 = replicate(jnp.full(n, -jnp.log(n)))

    def cond(c):
        x, log_w, log_Z, betas, t, ess, key = c
        return (betas[t] < 1.0) & (t < max_num_steps)

    def body(c):
        x, log_w, log_Z, betas, t, ess, key = c
        key, k_res, k_move = jax.random.split(key, 3)
        x, log_w, _, _ = sequential.resample(k_res, x, log_w, ess_threshold, resampling, mesh)
        beta = betas[t]
        x = jax.vmap(move, (0, 0, None))(jax.random.split(k_move, n), x, lambda z: log_pi(z, beta))
        x = shard(x)
        # prior and target log densities once per particle; the bisection reuses them
        lp = jax.vmap(log_prior_fn)(x)
        lt = lp + jax.vmap(log_likelihood_fn)(x)
        lp, lt = replicate((lp, lt))
        inc_fn = lambda b: path(lp, lt, b) - path(lp, lt, beta)  # noqa: E731
        nb = annealing.next_beta_bisection(log_w, inc_fn, beta, target_ess)
        nb = jnp.where(t + 1 == max_num_steps, 1.0, nb)
        log_w = log_w + inc_fn(nb)
        total = jax.nn.logsumexp(log_w)
        log_w = rs.normalize(log_w)
        return (
            x,
            log_w,
            log_Z + total,
            betas.at[t + 1].set(nb),
            t + 1,
            ess.at[t].set(rs.ess(log_w)),
            key,
        )

    x, log_w, log_Z, betas, t, ess, _ = jax.lax.while_loop(
        cond, body, (x0, log_w0, jnp.zeros(()), betas0, jnp.asarray(0), ess0, key)
    )
    return AdaptiveResult(x, log_w, log_Z, betas, t, ess)
