"""Orbital, multinomial and contracting orbital HMC: the leapfrog map as $T$, partial momentum
refresh between iterations, BlackJAX's top-level API."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc import integrators, metrics

from kernels._deprecation import renamed
from kernels.involutive._api import check_mass_matrix, check_position
from kernels.orbital.base import OrbitalInfo, OrbitalState, init
from kernels.orbital.transition import choose, orbit_info, orbital_step
from kernels.orbital.window import contracting_window
from kernels.types import Array, ArrayLikeTree, LogDensityFn, PRNGKey


def _hamiltonian_parts(logdensity_fn, step_size, inverse_mass_matrix, friction=0.0):
    """(metric, signed_step, logweight) for leapfrog, with friction $D_{\\epsilon/2} L D_{\\epsilon/2}$."""
    metric = metrics.default_metric(inverse_mass_matrix)
    integrator = integrators.velocity_verlet(logdensity_fn, metric.kinetic_energy)
    # static test; a traced friction (per-particle parameters in SMC) always takes the damped path
    damped = isinstance(friction, jax.core.Tracer) or bool(friction)

    def signed_step(z, d):
        eps = d * step_size
        if damped:
            damp = jnp.exp(-0.5 * friction * eps)
            z = z._replace(momentum=jax.tree.map(lambda p: damp * p, z.momentum))
        z = integrator(z, eps)
        logdet = jnp.zeros((), jnp.result_type(float))
        if damped:
            z = z._replace(momentum=jax.tree.map(lambda p: damp * p, z.momentum))
            dim = sum(x.size for x in jax.tree.leaves(z.momentum))
            logdet = -friction * eps * dim
        return z, logdet

    def logweight(z):
        return z.logdensity - metric.kinetic_energy(z.momentum)

    return metric, signed_step, logweight


def _refresh(key, state, metric, alpha):
    xi = metric.sample_momentum(key, state.position)
    if alpha == 0.0:
        return xi
    c = jnp.sqrt(1.0 - alpha**2)
    return jax.tree.map(lambda p, x: alpha * p + c * x, state.momentum, xi)


def _check_rotation(rotation):
    if rotation is not None and not 0.0 < float(rotation) < 1.0:
        raise ValueError(
            f"rotation must lie in (0, 1) (or be None for independent sampling), got {rotation!r}."
        )
    return None if rotation is None else float(rotation)


def build_kernel(
    index_shift: int | None = None,
    alpha: float | None = None,
    period: int | None = None,
    rotation: float | None = None,
    *,
    momentum_persistence: float | None = None,
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the orbital HMC transition (BlackJAX ``build_kernel`` contract).

    Args:
        index_shift: $c$ in the deterministic index shift $k \\leftarrow (j^* - c) \\bmod n$; ``None``
            draws a uniformly random window offset every step instead (multinomial HMC).
        alpha: momentum persistence $\\alpha$ of the partial momentum refresh
            $p \\leftarrow \\alpha p + \\sqrt{1-\\alpha^2}\\xi$ (0: full refresh; BlackJAX's
            ``ghmc`` and ``kernels.involutive`` call it ``alpha`` too).
        momentum_persistence: deprecated name of ``alpha``.
        period: default number of slots P (static); fixing it here lets the kernel run inside
            ``blackjax.tempered_smc``, whose ``extend_params`` turns parameters into arrays.
        rotation: orbit choice, see :func:`choose` (None: independent sampling).

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=None,
        num_points=None)``; ``num_points`` (may be traced, at most ``period``) shortens the
        window.
    """
    default_period = period
    alpha = renamed(
        "alpha", alpha, "momentum_persistence", momentum_persistence, 0.0, "build_kernel"
    )
    if not isinstance(alpha, jax.core.Tracer):  # traced: built inside jit, checked by the caller
        alpha = float(alpha)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha (momentum persistence) must be in [0, 1), got {alpha}.")
    rotation = _check_rotation(rotation)

    def kernel(
        rng_key: PRNGKey,
        state: OrbitalState,
        logdensity_fn: LogDensityFn,
        step_size: float,
        inverse_mass_matrix: Array,
        period: int | None = None,
        num_points: Array | int | None = None,
    ) -> tuple[OrbitalState, OrbitalInfo]:
        period = default_period if period is None else int(period)
        if period is None:
            raise ValueError("period is required (as a kernel argument or in build_kernel).")
        n = jnp.asarray(period if num_points is None else num_points, jnp.int32)
        metric, signed_step, logweight = _hamiltonian_parts(
            logdensity_fn, step_size, inverse_mass_matrix
        )
        key_mom, key_idx, key_choice = jax.random.split(rng_key, 3)
        momentum = _refresh(key_mom, state, metric, alpha)
        if index_shift is None:
            k = jax.random.randint(key_idx, (), 0, n, jnp.int32)
        else:
            k = jnp.minimum(state.index, n - 1)
        z0 = integrators.IntegratorState(
            state.position, momentum, state.logdensity, state.logdensity_grad
        )
        z, j, points, logw, trans = orbital_step(
            key_choice, z0, k, signed_step, logweight, period, rotation, n
        )
        if index_shift is None:
            new_index = jnp.zeros((), jnp.int32)
        else:
            new_index = jnp.mod(j - index_shift, n).astype(jnp.int32)
        new_state = OrbitalState(z.position, z.momentum, z.logdensity, z.logdensity_grad, new_index)
        valid = jnp.arange(period) < n
        return new_state, orbit_info(logw, k, j, trans, points, n - 1, valid)

    return kernel


def build_contracting_kernel(
    max_steps: int | None = None, log_cutoff: float = 20.0, rotation: float | None = None
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the contracting orbital transition (leapfrog with friction, both ways).

    Args:
        max_steps: at most this many leapfrog steps each way (static; or pass it to the
            kernel).
        log_cutoff: stop a direction once its log weight is below the running maximum minus
            this, and drop the points below the final maximum minus this.
        rotation: orbit choice, see :func:`choose`.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, friction,
        max_steps=None)``.
    """
    rotation = _check_rotation(rotation)
    default_max_steps = max_steps

    def kernel(
        rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, friction, max_steps=None
    ):
        max_steps = default_max_steps if max_steps is None else int(max_steps)
        if max_steps is None:
            raise ValueError("max_steps is required (as a kernel argument or in build_kernel).")
        metric, signed_step, logweight = _hamiltonian_parts(
            logdensity_fn, step_size, inverse_mass_matrix, friction
        )
        key_mom, key_choice = jax.random.split(rng_key)
        momentum = metric.sample_momentum(key_mom, state.position)
        z0 = integrators.IntegratorState(
            state.position, momentum, state.logdensity, state.logdensity_grad
        )
        points, logw, num_steps = contracting_window(
            z0, signed_step, logweight, max_steps, log_cutoff
        )
        j, trans = choose(key_choice, logw, max_steps, rotation)
        z = jax.tree.map(lambda x: x[j], points)
        new_state = OrbitalState(
            z.position, z.momentum, z.logdensity, z.logdensity_grad, jnp.zeros((), jnp.int32)
        )
        info = orbit_info(logw, max_steps, j, trans, points, num_steps, jnp.isfinite(logw))
        return new_state, info

    return kernel


def build_orbital_kernel(
    period: int | None = None,
    index_shift: int | None = None,
    alpha: float | None = None,
    rotation: float | None = None,
    *,
    momentum_persistence: float | None = None,
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the orbital HMC transition of :func:`orbital_hmc` (``index_shift`` ``P // 2``).

    Args:
        period: default window length P (static; or pass it to the kernel).
        index_shift: $c$ of the index shift; default ``P // 2``.
        alpha: momentum persistence $\\alpha$ of the partial momentum refresh.
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        momentum_persistence: deprecated name of ``alpha``.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=None,
        num_points=None)``.
    """
    alpha = renamed(
        "alpha", alpha, "momentum_persistence", momentum_persistence, 0.0, "build_orbital_kernel"
    )
    build_kernel(0, alpha, period, rotation)  # checks the arguments
    default_period = period

    def kernel(
        rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=None, num_points=None
    ):
        period = default_period if period is None else int(period)
        if period is None:
            raise ValueError("period is required (as a kernel argument or in build_kernel).")
        shift = period // 2 if index_shift is None else int(index_shift)
        inner = build_kernel(shift, alpha, period, rotation)
        return inner(
            rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, None, num_points
        )

    return kernel


def build_multinomial_kernel(
    num_integration_steps: int | None = None,
    rotation: float | None = None,
    *,
    num_steps: int | None = None,
) -> Callable[..., tuple[OrbitalState, OrbitalInfo]]:
    """Build the multinomial HMC transition (BlackJAX ``build_kernel`` contract).

    Args:
        num_integration_steps: default number of leapfrog steps $L$ (static; window of $L + 1$
            points; BlackJAX's name).
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        num_steps: deprecated name of ``num_integration_steps``.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix,
        num_integration_steps=None)``.
    """
    kernel = build_kernel(index_shift=None, rotation=rotation)
    default_steps = renamed(
        "num_integration_steps",
        num_integration_steps,
        "num_steps",
        num_steps,
        None,
        "build_multinomial_kernel",
    )

    def multinomial_kernel(
        rng_key,
        state,
        logdensity_fn,
        step_size,
        inverse_mass_matrix,
        num_integration_steps=None,
        num_steps=None,
    ):
        steps = renamed(
            "num_integration_steps",
            num_integration_steps,
            "num_steps",
            num_steps,
            default_steps,
            "multinomial_kernel",
        )
        if steps is None:
            raise ValueError(
                "num_integration_steps is required (as a kernel argument or in build_kernel)."
            )
        return kernel(
            rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, period=int(steps) + 1
        )

    return multinomial_kernel


def _check(step_size, period):
    if int(period) != period or period < 1:
        raise ValueError(f"period must be a positive integer, got {period!r}.")
    if not isinstance(step_size, jax.core.Tracer) and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")


def _top_level(logdensity_fn, kernel, inverse_mass_matrix, **params) -> SamplingAlgorithm:
    def init_fn(position: ArrayLikeTree, rng_key=None) -> OrbitalState:
        del rng_key
        check_position(position)
        check_mass_matrix(position, inverse_mass_matrix)
        state = init(position, logdensity_fn)
        if not isinstance(state.logdensity, jax.core.Tracer) and not bool(
            jnp.all(jnp.isfinite(state.logdensity))
        ):
            raise ValueError(
                "The log density is not finite at the initial position "
                f"(got {state.logdensity}); start from a point inside the support."
            )
        return state

    def step_fn(rng_key: PRNGKey, state: OrbitalState):
        return kernel(
            rng_key, state, logdensity_fn, inverse_mass_matrix=inverse_mass_matrix, **params
        )

    return SamplingAlgorithm(init_fn, step_fn)


def orbital_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: Array,
    period: int,
    *,
    index_shift: int | None = None,
    alpha: float | None = None,
    rotation: float | None = None,
    num_points: Array | int | None = None,
    momentum_persistence: float | None = None,
) -> SamplingAlgorithm:
    """Orbital HMC: leapfrog orbits of ``period`` points with a deterministic index shift.

    Args:
        logdensity_fn: log density of the target (pytree -> scalar).
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal (1-d) or dense (2-d) inverse mass matrix.
        period: orbit window length P (P - 1 gradients per step).
        index_shift: $c$ of the shift $k \\leftarrow (j^*-c) \\bmod P$; default ``P // 2``.
        alpha: momentum persistence $\\alpha$ of the partial momentum refresh (0: full refresh).
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        num_points: use only the first $n \\le P$ slots (may be traced).
        momentum_persistence: deprecated name of ``alpha``.

    Returns:
        a ``blackjax.base.SamplingAlgorithm`` with ``.init(position)`` and ``.step(key, state)``.
    """
    _check(step_size, period)
    shift = period // 2 if index_shift is None else int(index_shift)
    alpha = renamed(
        "alpha", alpha, "momentum_persistence", momentum_persistence, 0.0, "orbital_hmc"
    )
    kernel = build_kernel(index_shift=shift, alpha=alpha, rotation=rotation)
    return _top_level(
        logdensity_fn,
        kernel,
        inverse_mass_matrix,
        step_size=step_size,
        period=int(period),
        num_points=num_points,
    )


def multinomial_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: Array,
    num_integration_steps: int | None = None,
    *,
    rotation: float | None = None,
    num_steps: int | None = None,
) -> SamplingAlgorithm:
    """Multinomial HMC over a trajectory of ``num_integration_steps`` leapfrog steps with a
    random offset.

    The current point sits at a uniformly random slot $k$ of the window of $L + 1$ points
    $\\{T^{j-k}(q, p)\\}$; the next state is drawn from the window with weights
    $\\propto \\exp(-H)$. Invariant for every $L$ (the offset makes the window an orbit of the
    periodic extension).

    Args:
        logdensity_fn: log density of the target.
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal or dense inverse mass matrix.
        num_integration_steps: number of leapfrog steps L (the window has L + 1 points, L
            gradients; BlackJAX's name).
        rotation: orbit choice, see :func:`choose` (None: independent sampling).
        num_steps: deprecated name of ``num_integration_steps``.

    Returns:
        a ``blackjax.base.SamplingAlgorithm``.
    """
    steps = renamed(
        "num_integration_steps",
        num_integration_steps,
        "num_steps",
        num_steps,
        None,
        "multinomial_hmc",
    )
    if steps is None:
        raise TypeError("multinomial_hmc: num_integration_steps is required.")
    _check(step_size, steps + 1)
    kernel = build_multinomial_kernel(int(steps), rotation=rotation)
    return _top_level(logdensity_fn, kernel, inverse_mass_matrix, step_size=step_size)


def contracting_orbital_hmc(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: Array,
    friction: float,
    max_steps: int,
    log_cutoff: float = 20.0,
) -> SamplingAlgorithm:
    """Contracting orbital kernel: leapfrog with friction, integrated both ways.

    The map $T = D_{\\epsilon/2} L_\\epsilon D_{\\epsilon/2}$, $D_t(p) = e^{-\\gamma t} p$, has
    $\\log|\\det J_T| = -\\gamma\\epsilon d$; along the orbit the weights
    $\\pi(T^m z)|\\det J_{T^m}|$ decay both ways (energy dissipates forward and the volume
    shrinks; backward the energy grows). Each direction is integrated until its log weight falls
    below the running maximum minus ``log_cutoff`` (at most ``max_steps``), and the points below
    the final maximum minus ``log_cutoff`` are dropped, so the kept set does not depend on where
    the orbit was entered when the weights are unimodal along it. The kernel is exact on the
    infinite orbit; the truncation moves at most the orbit mass below the cutoff (a fraction of
    order $e^{-\\text{cutoff}}$) per step. ``info.num_grad_evals`` counts the steps taken.

    Args:
        logdensity_fn: log density of the target.
        step_size: leapfrog step size.
        inverse_mass_matrix: diagonal or dense inverse mass matrix.
        friction: $\\gamma > 0$.
        max_steps: at most this many steps each way (the window has ``2 * max_steps + 1`` slots).
        log_cutoff: relative log-weight cutoff.

    Returns:
        a ``blackjax.base.SamplingAlgorithm``.
    """
    _check(step_size, max_steps)
    if not friction > 0:
        raise ValueError(f"friction must be positive, got {friction}.")
    if not log_cutoff > 0:
        raise ValueError(f"log_cutoff must be positive, got {log_cutoff}.")
    kernel = build_contracting_kernel(int(max_steps), float(log_cutoff))
    return _top_level(
        logdensity_fn, kernel, inverse_mass_matrix, step_size=step_size, friction=float(friction)
    )


def _api(top_level, build) -> GenerateSamplingAPI:
    api = GenerateSamplingAPI(top_level, init, build)
    api.__doc__ = top_level.__doc__
    return api


# BlackJAX's top-level API: call for a SamplingAlgorithm; ``.init(position, logdensity_fn)`` and
# ``.build_kernel(...)`` for blackjax.tempered_smc and kernels.smc.tempering (the static sizes
# (period, num_steps, max_steps) go to build_kernel or to the kernel call).
orbital_hmc = _api(orbital_hmc, build_orbital_kernel)
multinomial_hmc = _api(multinomial_hmc, build_multinomial_kernel)
contracting_orbital_hmc = _api(contracting_orbital_hmc, build_contracting_kernel)
