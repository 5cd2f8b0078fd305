r"""Irreversible MALA: MALA with a persistent, partially refreshed momentum.

:func:`~kernels.involutive.combinators.partial_refresh` applied to the MALA move of
:mod:`kernels.involutive.langevin`: the state carries the momentum $p$; each step sets
$p \leftarrow \alpha p + \sqrt{1-\alpha^2}\,\xi$, applies the involution
(one leapfrog step of size $\sqrt{2h}$ and the flip), accepts with the involutive ratio,
and negates $p$. The sign of $p$ is a direction variable: accepted steps keep going,
rejections reverse (Horowitz 1991; paper, Sec. 4 "irreversibility"). $\alpha = 0$ is MALA.
"""

from collections.abc import Callable

from blackjax.base import SamplingAlgorithm

from kernels.involutive import base
from kernels.involutive._api import (
    GenerateSamplingAPI,
    MassMatrix,
    checked_init,
    default_inverse_mass_matrix,
)
from kernels.involutive.base import InvolutiveState, Move
from kernels.involutive.combinators import partial_refresh
from kernels.involutive.langevin import langevin_move
from kernels.types import ArrayLikeTree, LogDensityFn

__all__ = [
    "irreversible_langevin_move",
    "init",
    "build_kernel",
    "as_top_level_api",
    "irreversible_mala",
]


def irreversible_langevin_move(
    logdensity_fn: LogDensityFn, step_size: float, inverse_mass_matrix: MassMatrix, alpha: float
) -> Move:
    """``partial_refresh(langevin_move(...), alpha)``.

    Args:
        logdensity_fn: $\\log p(x)$.
        step_size: MALA step size $h$.
        inverse_mass_matrix: preconditioner.
        alpha: momentum persistence in $[0, 1)$.

    Returns:
        The move.
    """
    return partial_refresh(langevin_move(logdensity_fn, step_size, inverse_mass_matrix), alpha)


def init(position: ArrayLikeTree, logdensity_fn: LogDensityFn) -> InvolutiveState:
    """Initial state: cached log density and gradient, ``partial_refresh``'s empty slot.

    Args:
        position: initial position pytree.
        logdensity_fn: $\\log p(x)$.

    Returns:
        The state.
    """
    state = base.init(position, logdensity_fn, with_grad=True)
    move = irreversible_langevin_move(logdensity_fn, 1.0, None, 0.0)  # the slot's layout only
    return state._replace(aux=move.init_aux(state))


def build_kernel(divergence_threshold: float = 1000.0) -> Callable:
    """Irreversible MALA kernel with BlackJAX's signature.

    Args:
        divergence_threshold: log-ratio error above which a step is divergent.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix=None, alpha=0.9)``.
    """

    def kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix=None, alpha=0.9):
        imm = default_inverse_mass_matrix(state.position, inverse_mass_matrix)
        move = irreversible_langevin_move(logdensity_fn, step_size, imm, alpha)
        return base.step(rng_key, state, move, divergence_threshold)

    return kernel


def as_top_level_api(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: MassMatrix = None,
    alpha: float = 0.9,
    *,
    divergence_threshold: float = 1000.0,
) -> SamplingAlgorithm:
    """Irreversible MALA through the generic involutive kernel.

    Args:
        logdensity_fn: $\\log p(x)$.
        step_size: MALA step size $h$.
        inverse_mass_matrix: preconditioner, identity if None.
        alpha: momentum persistence in $[0, 1)$.
        divergence_threshold: log-ratio error above which a step is divergent.

    Returns:
        ``SamplingAlgorithm``.
    """
    kernel = build_kernel(divergence_threshold)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, alpha)

    return SamplingAlgorithm(checked_init(init, logdensity_fn, inverse_mass_matrix), step_fn)


irreversible_mala = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
