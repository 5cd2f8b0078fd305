r"""Hamiltonian Monte Carlo as an involutive move (paper, Appendix B.6).

Auxiliary momentum $p \sim \mathcal{N}(0, M)$; involution
$f(x, p) = \mathrm{flip} \circ \mathrm{LF}_{\epsilon}^{L}(x, p)$ (``L`` leapfrog steps, then
$p \mapsto -p$), volume preserving ($\log|\det J_f| = 0$, no ``slogdet``); acceptance
$\min\{1, \exp(-H(x', p') + H(x, p))\}$ with $H = -\log p(x) + \tfrac12 p^\top M^{-1} p$.
The log density and its gradient are cached in the state: ``L`` gradient evaluations per step,
as ``blackjax.hmc``. BlackJAX's integrators and metrics are reused.
"""

from collections.abc import Callable

import blackjax.mcmc.integrators as integrators
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

__all__ = ["leapfrog_move", "init", "build_kernel", "as_top_level_api", "hmc"]


def leapfrog_move(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: MassMatrix,
    num_integration_steps: int,
    integrator: Callable = integrators.velocity_verlet,
) -> Move:
    """The HMC move: Gaussian momentum, ``L`` integrator steps, momentum flip.

    Args:
        logdensity_fn: $\\log p(x)$.
        step_size: leapfrog step size $\\epsilon$.
        inverse_mass_matrix: $M^{-1}$, ``(d,)`` diagonal or ``(d, d)`` dense (ravelled
            position order), a ``blackjax.mcmc.metrics.Metric``, or None (identity).
        num_integration_steps: $L$.
        integrator: a BlackJAX symplectic integrator factory (``velocity_verlet`` by default).

    Returns:
        The move (its states cache ``logdensity_grad``).
    """
    get_metric = metric_factory(inverse_mass_matrix)

    def sample_aux(rng_key, state):
        return get_metric(state.position).sample_momentum(rng_key, state.position)

    def aux_logdensity(momentum, state):
        return -get_metric(state.position).kinetic_energy(momentum)

    def involution(state, momentum):
        one_step = integrator(logdensity_fn, get_metric(state.position).kinetic_energy)
        start = integrators.IntegratorState(
            state.position, momentum, state.logdensity, state.logdensity_grad
        )
        end = jax.lax.fori_loop(
            0, num_integration_steps, lambda _, s: one_step(s, step_size), start
        )
        proposal = InvolutiveState(end.position, end.logdensity, end.logdensity_grad, state.aux)
        flipped = jax.tree.map(jnp.negative, end.momentum)
        return proposal, flipped, jnp.zeros((), jnp.result_type(end.logdensity))

    def grad_evals(momentum):
        del momentum
        return jnp.asarray(num_integration_steps, jnp.int32)

    return Move(sample_aux, aux_logdensity, involution, grad_evals=grad_evals)


def init(position: ArrayLikeTree, logdensity_fn: LogDensityFn) -> InvolutiveState:
    """Initial state with cached log density and gradient (raises on a non-finite value).

    Args:
        position: initial position pytree.
        logdensity_fn: $\\log p(x)$.

    Returns:
        The state.
    """
    return base.init(position, logdensity_fn, with_grad=True)


def build_kernel(
    integrator: Callable = integrators.velocity_verlet, divergence_threshold: float = 1000.0
) -> Callable:
    """HMC kernel with BlackJAX's signature (drop-in for ``blackjax.tempered_smc``).

    Args:
        integrator: BlackJAX integrator factory.
        divergence_threshold: energy error above which a step is divergent.

    Returns:
        ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix,
        num_integration_steps) -> (state, info)``.
    """

    def kernel(
        rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps
    ):
        imm = default_inverse_mass_matrix(state.position, inverse_mass_matrix)
        move = leapfrog_move(logdensity_fn, step_size, imm, num_integration_steps, integrator)
        return base.step(rng_key, state, move, divergence_threshold)

    return kernel


def as_top_level_api(
    logdensity_fn: LogDensityFn,
    step_size: float,
    inverse_mass_matrix: MassMatrix = None,
    num_integration_steps: int = 10,
    *,
    integrator: Callable = integrators.velocity_verlet,
    divergence_threshold: float = 1000.0,
) -> SamplingAlgorithm:
    """HMC through the generic involutive kernel, ``blackjax.hmc``'s signature.

    Args:
        logdensity_fn: $\\log p(x)$.
        step_size: leapfrog step size.
        inverse_mass_matrix: ``(d,)`` or ``(d, d)``; identity if None.
        num_integration_steps: leapfrog steps per proposal.
        integrator: BlackJAX integrator factory.
        divergence_threshold: energy error above which a step is divergent.

    Returns:
        ``SamplingAlgorithm`` (``init(position)``, ``step(rng_key, state)``).
    """
    kernel = build_kernel(integrator, divergence_threshold)

    def step_fn(rng_key, state):
        return kernel(
            rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps
        )

    return SamplingAlgorithm(checked_init(init, logdensity_fn, inverse_mass_matrix), step_fn)


hmc = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
