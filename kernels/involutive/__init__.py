"""Involutive MCMC (Neklyudov et al., ICML 2020): generic kernel, combinators, built-ins.

Generic: :func:`imcmc`, :class:`Move`, :func:`step`, :func:`check_involution`.
Combinators (moves to moves): :func:`mixture`, :func:`state_dependent_mixture`, :func:`lifted`,
:func:`partial_refresh`. Built-ins through the generic kernel, each with BlackJAX's
``GenerateSamplingAPI`` (call, ``.init``, ``.build_kernel``): :data:`rwm`, :data:`mala`,
:data:`hmc`, :data:`irreversible_mala`.
"""

from kernels.involutive.base import (
    InvolutiveInfo,
    InvolutiveState,
    Move,
    accept_reject,
    as_sampling_algorithm,
    build_kernel,
    check_involution,
    from_involution,
    imcmc,
    init,
    log_abs_det_jacobian,
    step,
    transition,
)
from kernels.involutive.combinators import (
    lifted,
    mixture,
    partial_refresh,
    state_dependent_mixture,
)
from kernels.involutive.hamiltonian import hmc, leapfrog_move
from kernels.involutive.irreversible import irreversible_langevin_move, irreversible_mala
from kernels.involutive.langevin import langevin_move, mala
from kernels.involutive.random_walk import random_walk_move, rwm

__all__ = [
    "InvolutiveInfo",
    "InvolutiveState",
    "Move",
    "accept_reject",
    "as_sampling_algorithm",
    "build_kernel",
    "check_involution",
    "from_involution",
    "imcmc",
    "init",
    "log_abs_det_jacobian",
    "step",
    "transition",
    "lifted",
    "mixture",
    "partial_refresh",
    "state_dependent_mixture",
    "hmc",
    "mala",
    "rwm",
    "irreversible_mala",
    "leapfrog_move",
    "langevin_move",
    "random_walk_move",
    "irreversible_langevin_move",
]
