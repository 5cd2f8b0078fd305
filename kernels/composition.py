r"""Composition of MCMC kernels: a cycle of kernels, each on one block of the position.

Target $p(x)$ with $x = (x_{b_1}, \dots, x_{b_m})$ (blocks are keys of a dict position, or the
whole position). One step of :func:`cycle` runs, in order, for each block $b$ a kernel
$K_b$ that leaves the conditional $p(x_b \mid x_{-b})$ invariant (built from the conditional
log density $x_b \mapsto \log p(x_b, x_{-b})$ at the current $x_{-b}$); each $K_b$ leaves $p$
invariant, hence so does their composition $K_{b_m} \cdots K_{b_1}$ (a deterministic-scan
Gibbs sampler when the $K_b$ are exact conditionals; alternating kernels when every block is
the whole position). E.g. HMC on the continuous sites and a discrete move on the others.

Each kernel's state is re-initialised at the current position before its step (its cached
log density and gradient depend on the other blocks); its persistent fields (``aux`` of an
involutive state: directions and momenta; ``momentum`` of an orbital state) are carried over
from its previous step. They are independent of $x$ under the invariant law, so carrying them
keeps the composition exact.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
from blackjax.base import SamplingAlgorithm

from kernels.types import Array, ArrayLikeTree, ArrayTree, LogDensityFn, PRNGKey

__all__ = ["CycleState", "CycleInfo", "cycle", "init", "build_kernel"]

PERSISTENT_FIELDS = ("aux", "momentum")
"""Fields of a block kernel's state carried from one sweep to the next."""

Block = tuple[Any, Callable[[LogDensityFn], SamplingAlgorithm]]


class CycleState(NamedTuple):
    """State of a cycle of kernels.

    Attributes:
        position: current position (a dict of blocks, or any pytree when every block is the
            whole position).
        logdensity: $\\log p(x)$ at ``position``.
        states: each block kernel's state after its last step (tuple, one per block).
    """

    position: ArrayTree
    logdensity: Array
    states: tuple


class CycleInfo(NamedTuple):
    """Information on one sweep.

    Attributes:
        infos: each block kernel's info (tuple, one per block, in order).
        acceptance_rate: mean of the blocks' ``acceptance_rate`` (those that report one).
    """

    infos: tuple
    acceptance_rate: Array


def _check_blocks(blocks: Sequence[Block]) -> list[Block]:
    blocks = list(blocks)
    if not blocks:
        raise ValueError("cycle needs at least one (block, kernel factory) pair.")
    for entry in blocks:
        if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[1])):
            raise TypeError(
                "Each block must be a pair (site, factory) with factory(logdensity_fn) -> "
                f"SamplingAlgorithm and site a key of the position dict or None; got {entry!r}."
            )
    return blocks


def _get(position, site):
    if site is None:
        return position
    if not isinstance(position, dict) or site not in position:
        raise KeyError(
            f"Block {site!r} is not a key of the position (a dict with keys "
            f"{sorted(position) if isinstance(position, dict) else type(position).__name__})."
        )
    return position[site]


def _set(position, site, value):
    if site is None:
        return value
    return {**position, site: value}


def _conditional(logdensity_fn, position, site):
    return lambda value: logdensity_fn(_set(position, site, value))


def _carry(fresh, old):
    fields = [f for f in PERSISTENT_FIELDS if hasattr(fresh, f) and hasattr(old, f)]
    return fresh._replace(**{f: getattr(old, f) for f in fields}) if fields else fresh


def init(
    position: ArrayLikeTree, logdensity_fn: LogDensityFn, blocks: Sequence[Block]
) -> CycleState:
    """Initial state: every block kernel initialised at ``position``.

    Args:
        position: initial position.
        logdensity_fn: $\\log p(x)$.
        blocks: ``[(site, factory), ...]``, ``factory(conditional_logdensity_fn) ->
            SamplingAlgorithm``; ``site`` a key of the position dict, or None for the whole
            position.

    Returns:
        The state.
    """
    blocks = _check_blocks(blocks)
    states = tuple(
        factory(_conditional(logdensity_fn, position, site)).init(_get(position, site))
        for site, factory in blocks
    )
    return CycleState(position, logdensity_fn(position), states)


def build_kernel(blocks: Sequence[Block]) -> Callable:
    """The cycle kernel, BlackJAX style.

    Args:
        blocks: see :func:`init`.

    Returns:
        ``kernel(rng_key, state, logdensity_fn) -> (state, info)``.
    """
    blocks = _check_blocks(blocks)

    def kernel(rng_key: PRNGKey, state: CycleState, logdensity_fn: LogDensityFn):
        position, states, infos = state.position, list(state.states), []
        for i, (key, (site, factory)) in enumerate(
            zip(jax.random.split(rng_key, len(blocks)), blocks, strict=True)
        ):
            algo = factory(_conditional(logdensity_fn, position, site))
            block_state = _carry(algo.init(_get(position, site)), states[i])
            block_state, info = algo.step(key, block_state)
            position = _set(position, site, block_state.position)
            states[i] = block_state
            infos.append(info)
        rates = [info.acceptance_rate for info in infos if hasattr(info, "acceptance_rate")]
        rate = sum(rates) / len(rates) if rates else jax.numpy.nan
        new_state = CycleState(position, logdensity_fn(position), tuple(states))
        return new_state, CycleInfo(tuple(infos), jax.numpy.asarray(rate))

    return kernel


def cycle(logdensity_fn: LogDensityFn, blocks: Sequence[Block]) -> SamplingAlgorithm:
    """Run the block kernels in turn (deterministic scan), as one ``SamplingAlgorithm``.

    Args:
        logdensity_fn: $\\log p(x)$ of the whole position.
        blocks: ``[(site, factory), ...]``; ``factory(conditional_logdensity_fn)`` returns the
            kernel for that block (e.g. ``lambda lp: kernels.involutive.hmc(lp, 0.2)``).

    Returns:
        ``SamplingAlgorithm`` with ``init(position)`` and ``step(rng_key, state)``.

    Example:
        >>> algo = cycle(logp, [("x", lambda lp: inv.hmc(lp, 0.3, None, 5)),
        ...                     ("z", lambda lp: inv.imcmc(lp, *ring_walk))])
    """
    kernel = build_kernel(blocks)

    def init_fn(position, rng_key=None):
        del rng_key
        return init(position, logdensity_fn, blocks)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn)

    return SamplingAlgorithm(init_fn, step_fn)
