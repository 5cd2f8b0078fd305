r"""Random-walk Metropolis-Hastings as an involutive move (paper, Appendix B.1).

Auxiliary $v \sim \mathcal{N}(0, M)$; involution
$f(x, v) = (x + s\,M^{-1}v,\; -v)$ with $\log|\det J_f| = 0$; acceptance
$\min\{1, p(x')/p(x)\}$ (the Gaussian terms cancel). The increment is
$\mathcal{N}(0, s^2 M^{-1})$: ``inverse_mass_matrix`` is the proposal covariance shape.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from kernels.involutive import base
from kernels.involutive._api import (
    GenerateSamplingAPI,
    MassMatrix,
    checked_init,
    default_inverse_mass_matrix,
    metric_factory,
)
from kernels.involutive.base import InvolutiveState, Move
from kernels.types import ArrayLikeTree, LogDensityFn

__all__ = ["random_walk_move", "init", "build_kernel", "as_top_level_api", "rwm"]


def random_walk_move(
    logdensity_fn: LogDensityFn, scale: float, inverse_mass_matrix: MassMatrix
) -> Move:
    """Gaussian random-walk move with increment $\\mathcal{N}(0, s^2 M^{-1})$.

    Args:
        logdensity_fn: $\\log p(x)$.
        scale: $s$.
        inverse_mass_matrix: $M^{-1}$, ``(d,)`` or ``(d, d)``, or None (identity).

    Returns:
        The move (gradient-free).
    """
    get_metric = metric_factory(inverse_mass_matrix)

    def sample_aux(rng_key, state):
        return get_metric(state.position).sample_momentum(rng_key, state.position)

    def aux_logdensity(v, state):
        return -get_metric(state.position).kinetic_energy(v)

    def involution(state, v):
        velocity = jax.grad(get_metric(state.position).kinetic_energy)(v)  # M^{-1} v
        x_new = jax.tree.map(lambda x, u: x + scale * u, state.position, velocity)
        logdensity = logdensity_fn(x_new)
        proposal = InvolutiveState(x_new, logdensity, None, state.aux)
        return proposal, jax.tree.map(jnp.negative, v), jnp.zeros((), jnp.result_type(logdensity))

    return Move(sample_aux, aux_logdensity, involution)


def init(position: ArrayLikeTree, logdensity_fn: LogDensityFn) -> InvolutiveState:
    """Initial state with the cached log density (raises on a non-finite value).

    Args:
        position: initial position pytree.
        logdensity_fn: $\\log p(x)$.

    Returns:
        The state.
    """
    return base.init(position, logdensity_fn)


def build_kernel(divergence_threshold: float = 1000.0) -> Callable:
    """RWM kernel with BlackJAX's signature.

    Args:
        divergence_threshold: log-ratio error above which a step is divergent.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, scale=1.0, inverse_mass_matrix=None,
        step_size=None)`` (``step_size`` is an alias of ``scale``).
    """

    def kernel(rng_key, state, logdensity_fn, scale=1.0, inverse_mass_matrix=None, step_size=None):
        scale = scale if step_size is None else step_size
        imm = default_inverse_mass_matrix(state.position, inverse_mass_matrix)
        move = random_walk_move(logdensity_fn, scale, imm)
        return base.step(rng_key, state, move, divergence_threshold)

    return kernel


def as_top_level_api(
    logdensity_fn: LogDensityFn,
    scale: float = 1.0,
    inverse_mass_matrix: MassMatrix = None,
    *,
    step_size: float | None = None,
    divergence_threshold: float = 1000.0,
) -> SamplingAlgorithm:
    """Random-walk MH through the generic involutive kernel.

    Args:
        logdensity_fn: $\\log p(x)$.
        scale: increment scale $s$.
        inverse_mass_matrix: increment covariance shape $M^{-1}$, identity if None.
        step_size: alias of ``scale`` (uniform interface with the gradient-based built-ins).
        divergence_threshold: log-ratio error above which a step is divergent.

    Returns:
        ``SamplingAlgorithm``.
    """
    kernel = build_kernel(divergence_threshold)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn, scale, inverse_mass_matrix, step_size)

    return SamplingAlgorithm(checked_init(init, logdensity_fn, inverse_mass_matrix), step_fn)


rwm = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
