r"""Deterministic measure-preserving dynamics (Neklyudov, Bondesan, Welling, arXiv 2106.10188).

A velocity field $v$ with $\mathrm{div}(p\,v) = 0$ moves a density $p$ into itself. Modules, one
concept each:

* :mod:`kernels.flows.divergence_free`: the general sampler. A split of the field into exactly
  integrable components (volume-preserving shears, or exact $p$-preserving flows), composed
  symmetrically and corrected exactly by orbit weights; HMC is the Hamiltonian special case.
* :mod:`kernels.flows.continuous_gibbs`: continuous deterministic Gibbs, all coordinates moving
  at once with speed $c_i / p(x_i \mid x_{-i})$, integrated by exact conditional-quantile
  rotations (user-supplied conditionals, or quadrature on a grid).
* :mod:`kernels.flows.discrete_gibbs`: discrete deterministic Gibbs on finite state spaces,
  simulated event by event; the time spent in a state is its weight.
* :mod:`kernels.flows.weighted`: weighted estimates and a resampled unweighted view.

Every public name is re-exported here (``kernels.flows.<name>``).
"""

from kernels.flows.continuous_gibbs import (
    CGibbsInfo,
    CGibbsState,
    Conditionals,
    conditional_rotation,
    continuous_deterministic_gibbs,
    gibbs_sub_flows,
    grid_conditionals,
)
from kernels.flows.discrete_gibbs import (
    DGibbsInfo,
    DGibbsMoveInfo,
    DGibbsMoveState,
    DGibbsState,
    current_log_conditionals,
    deterministic_gibbs_move,
    discrete_deterministic_gibbs,
    ising_log_joint,
)
from kernels.flows.divergence_free import (
    FlowState,
    HamiltonianFlow,
    SubFlow,
    divergence,
    divergence_free_flow,
    flow_map,
    hamiltonian_flow,
    shear,
)
from kernels.flows.weighted import resample, weighted_mean

__all__ = [
    "CGibbsInfo",
    "CGibbsState",
    "Conditionals",
    "DGibbsInfo",
    "DGibbsMoveInfo",
    "DGibbsMoveState",
    "DGibbsState",
    "FlowState",
    "HamiltonianFlow",
    "SubFlow",
    "conditional_rotation",
    "continuous_deterministic_gibbs",
    "current_log_conditionals",
    "deterministic_gibbs_move",
    "discrete_deterministic_gibbs",
    "divergence",
    "divergence_free_flow",
    "flow_map",
    "gibbs_sub_flows",
    "grid_conditionals",
    "hamiltonian_flow",
    "ising_log_joint",
    "resample",
    "shear",
    "weighted_mean",
]
