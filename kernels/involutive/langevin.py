r"""MALA as an involutive move: one leapfrog step and a momentum flip.

With $p \sim \mathcal{N}(0, M)$ and one leapfrog step of size $\epsilon = \sqrt{2h}$,
$x' = x + h M^{-1}\nabla\log p(x) + \sqrt{2h}\,M^{-1/2}\xi$, the MALA proposal with step
size $h$ (BlackJAX's convention for ``blackjax.mala``), and the involutive acceptance ratio
equals the Metropolis-Hastings ratio of MALA (paper, Appendix B.6 with $L = 1$).
"""

from collections.abc import Callable

import blackjax.mcmc.integrators as integrators
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from kernels.involutive import base
from kernels.involutive._api import (
    GenerateSamplingAPI,
    MassMatrix,
    checked_init,
    default_inverse_mass_matrix,
)
from kernels.involutive.base import Move
from kernels.involutive.hamiltonian import init, leapfrog_move
from kernels.types import LogDensityFn

__all__ = ["langevin_move", "init", "build_kernel", "as_top_level_api", "mala"]


def langevin_move(
    logdensity_fn: LogDensityFn, step_size: float, inverse_mass_matrix: MassMatrix
) -> Move:
    """MALA move with step size $h$ (leapfrog step $\\sqrt{2h}$, one gradient).

    Args:
        logdensity_fn: $\\log p(x)$.
        step_size: $h$.
        inverse_mass_matrix: preconditioner $M^{-1}$, ``(d,)`` or ``(d, d)``.

    Returns:
        The move.
    """
    return leapfrog_move(
        logdensity_fn,
        jnp.sqrt(2.0 * step_size),
        inverse_mass_matrix,
        1,
        integrators.velocity_verlet,
    )


def build_kernel(divergence_threshold: float = 1000.0) -> Callable:
    """MALA kernel with BlackJAX's signature.

    Args:
        divergence_threshold: log-ratio error above which a step is divergent.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix=None)``.
    """

    def kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix=None):
        imm = default_inverse_mass_matrix(state.position, inverse_mass_matrix)
        move = langevin_move(logdensity_fn, step_size, imm)
        return base.step(rng_key, state, move, divergence_threshold)

    return kernel


def as_top_level_api(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: MassMatrix = None,
    *,
    divergence_threshold: float = 1000.0,
) -> SamplingAlgorithm:
    """MALA through the generic involutive kernel, ``blackjax.mala``'s signature.

    Args:
        logdensity_fn: $\\log p(x)$.
        step_size: $h$ (proposal $x + hM^{-1}\\nabla\\log p + \\sqrt{2h}M^{-1/2}\\xi$).
        inverse_mass_matrix: preconditioner, identity if None.
        divergence_threshold: log-ratio error above which a step is divergent.

    Returns:
        ``SamplingAlgorithm``.
    """
    kernel = build_kernel(divergence_threshold)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix)

    return SamplingAlgorithm(checked_init(init, logdensity_fn, inverse_mass_matrix), step_fn)


mala = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
