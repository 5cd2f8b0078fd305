r"""Orbital HMC (Neklyudov and Welling, arXiv 2010.08047) as a NumPyro kernel.

:class:`OrbitalMCMC` runs :func:`kernels.orbital.build_kernel` on a NumPyro model through
:class:`ppl.adapter.BlackJAXKernel`: NumPyro's ``initialize_model`` (unconstrained space,
``init_strategy``, ``postprocess_fn``) and NumPyro's warmup (dual averaging of the step size,
windowed diagonal or dense mass matrix).

Each iteration refreshes the momentum (fully, or partially with ``alpha``),
builds the leapfrog orbit window of $n$ points around the current point (at slot $k$), weights
the points by $\exp(-H)$ in log space and moves to one of them:

* the window is fixed in integration time as in ``numpyro.infer.HMC``: with the adapted step
  size $\epsilon$, $n - 1 = \lceil T/\epsilon \rceil$ leapfrog steps of size $T/(n-1)$ (at most
  ``max_period`` points, then steps of size $\epsilon$), or a fixed ``period`` $n$;
* the slot $k$ of the current point is drawn uniformly every iteration (``index_shift="random"``,
  exact for every window length) or shifted deterministically,
  $k \leftarrow (j^* - c) \bmod n$ (an int $c$, the irreversible orbital chain);
* the next point is drawn from the weights (``rotation=None``) or by the weight rotation
  ``rotation=r`` (default $1/2$: with equal weights the chain moves $n/2$ points along the
  trajectory, as HMC with integration time $T/2$; see :func:`kernels.orbital.choose`).

Dual averaging drives ``info.acceptance_rate``, the mean over the orbit of
$\min(1, w_j / w_k)$ (NUTS's statistic), to ``target_accept_prob``. One iteration costs
$n - 1$ gradient evaluations (the ``num_steps`` field).

The whole orbit and its normalized weights are in the state's ``info``: collect them with
``extra_fields=("info.orbit.position", "info.weights")`` and form Rao-Blackwellized estimates
with :meth:`OrbitalMCMC.rao_blackwell`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from numpyro.infer.initialization import init_to_uniform

import kernels.orbital as orbital
from kernels._deprecation import renamed
from kernels.types import Array, ArrayTree
from ppl.adapter import BlackJAXKernel, concrete

__all__ = ["OrbitalMCMC", "DEFAULT_TRAJECTORY_LENGTH"]

DEFAULT_TRAJECTORY_LENGTH = 4.0
"""Default integration time of the orbit window (the chain moves about half of it)."""


class OrbitalMCMC(BlackJAXKernel):
    """Orbital HMC kernel for ``numpyro.infer.MCMC``.

    Example::

        from numpyro.infer import MCMC
        from ppl import OrbitalMCMC

        mcmc = MCMC(OrbitalMCMC(model, dense_mass=True),
                    num_warmup=1000, num_samples=1000, num_chains=4, chain_method="vectorized")
        mcmc.run(jax.random.key(0), data)
        mcmc.print_summary()

    Args:
        model: NumPyro model (exactly one of ``model`` and ``potential_fn``).
        potential_fn: potential $U(z) = -\\log p(z)$; then pass ``init_params`` to ``MCMC.run``.
        step_size: initial leapfrog step size.
        trajectory_length: integration time $T$ spanned by the orbit window (excludes
            ``period``); default 4: with ``rotation=0.5`` the chain moves about $T/2 = 2$ along
            the trajectory, which on a whitened Gaussian gives lag-one correlations
            $\\cos 2 \\approx -0.42$ for the mean and $\\cos^2 2 \\approx 0.17$ for squares.
        period: a fixed window of ``period`` points instead (``period - 1`` leapfrog steps of
            the adapted step size).
        max_period: with ``trajectory_length``: at most this many window points (static array
            size; tiny step sizes early in warmup then give shorter windows).
        index_shift: ``"random"`` (a uniformly random slot every iteration) or an int $c$ (the
            deterministic shift $k \\leftarrow (j^* - c) \\bmod n$).
        alpha: momentum persistence $\\alpha \\in [0, 1)$ of the refresh
            $p \\leftarrow \\alpha p + \\sqrt{1 - \\alpha^2}\\,\\xi$ (0: full refresh; the name
            ``InvolutiveMCMC`` and BlackJAX's ``ghmc`` use).
        rotation: $r \\in (0, 1)$ for the weight rotation, or None to draw from the weights.
        adapt_step_size: dual averaging of the step size during warmup.
        adapt_mass_matrix: windowed mass-matrix estimate during warmup.
        dense_mass: dense (True) or diagonal (False) mass matrix, or NumPyro's structured list
            of site tuples with a dense block each (see :class:`ppl.BlackJAXKernel`).
        target_accept_prob: target of dual averaging.
        inverse_mass_matrix: initial inverse mass matrix, ``(d,)`` or ``(d, d)``, or NumPyro's
            dict of blocks ``{(site, ...): block}``.
        find_heuristic_step_size: NumPyro's step-size search at each adaptation window.
        regularize_mass_matrix: shrink the estimated mass matrix as Stan does.
        init_strategy: NumPyro per-site initialisation.
        forward_mode_differentiation: gradients by forward-mode autodiff (models with
            ``lax.while_loop``), as in NumPyro's HMC.
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        *,
        step_size: float = 1.0,
        trajectory_length: float | None = None,
        period: int | None = None,
        max_period: int = 128,
        index_shift: int | str = "random",
        alpha: float | None = None,
        rotation: float | None = 0.5,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        dense_mass: bool | list[tuple[str, ...]] = False,
        target_accept_prob: float = 0.8,
        inverse_mass_matrix: Array | None = None,
        find_heuristic_step_size: bool = False,
        regularize_mass_matrix: bool = True,
        init_strategy: Callable = init_to_uniform,
        momentum_persistence: float | None = None,
        forward_mode_differentiation: bool = False,
    ):
        alpha = renamed(
            "alpha", alpha, "momentum_persistence", momentum_persistence, 0.0, "OrbitalMCMC"
        )
        if period is not None and trajectory_length is not None:
            raise ValueError(
                "Pass period (a fixed number of window points) or trajectory_length (a fixed "
                "integration time), not both."
            )
        if period is not None and (int(period) != period or period < 2):
            raise ValueError(f"period must be an integer >= 2, got {period!r}.")
        if (
            trajectory_length is not None
            and concrete(trajectory_length)
            and not float(trajectory_length) > 0
        ):
            raise ValueError(f"trajectory_length must be positive, got {trajectory_length!r}.")
        if int(max_period) != max_period or max_period < 2:
            raise ValueError(f"max_period must be an integer >= 2, got {max_period!r}.")
        if index_shift != "random" and (
            isinstance(index_shift, str | bool) or int(index_shift) != index_shift
        ):
            raise ValueError(
                f"index_shift must be 'random' or an integer shift, got {index_shift!r}."
            )
        if concrete(alpha) and not 0.0 <= float(alpha) < 1.0:
            raise ValueError(f"alpha (momentum persistence) must lie in [0, 1), got {alpha!r}.")
        if period is None and trajectory_length is None:
            trajectory_length = DEFAULT_TRAJECTORY_LENGTH
        self._trajectory_length = trajectory_length
        self._period = None if period is None else int(period)
        self._max_period = int(max_period)
        self._index_shift = index_shift
        self._orbit_kernel = orbital.build_kernel(
            index_shift=None if index_shift == "random" else int(index_shift),
            alpha=alpha,
            period=self._period or self._max_period,
            rotation=rotation,
        )
        super().__init__(
            model,
            potential_fn,
            step_size=step_size,
            inverse_mass_matrix=inverse_mass_matrix,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            find_heuristic_step_size=find_heuristic_step_size,
            regularize_mass_matrix=regularize_mass_matrix,
            init_strategy=init_strategy,
            forward_mode_differentiation=forward_mode_differentiation,
        )

    def window(self, step_size: Array) -> tuple[Array, Array | None]:
        """Leapfrog step size and number of window points for an adapted step size.

        Args:
            step_size: the adapted step size $\\epsilon$.

        Returns:
            ``(leapfrog_step_size, num_points)``; ``num_points`` is None with a fixed ``period``.
        """
        if self._period is not None:
            return step_size, None
        ratio = self._trajectory_length / step_size
        capped = ratio > self._max_period - 1
        steps = jnp.where(capped, self._max_period - 1, jnp.maximum(jnp.ceil(ratio), 1.0))
        leapfrog = jnp.where(capped, step_size, self._trajectory_length / steps)
        return leapfrog, (steps + 1).astype(jnp.int32)

    def make_algorithm(
        self, logdensity_fn: Callable, step_size: Array, inverse_mass_matrix: Array
    ) -> SamplingAlgorithm:
        """Orbital HMC for the current step size and inverse mass matrix.

        Args:
            logdensity_fn: $\\log p(z)$ on the unconstrained position.
            step_size: current (adapted) step size.
            inverse_mass_matrix: current inverse mass matrix.

        Returns:
            The ``SamplingAlgorithm`` over :class:`kernels.orbital.OrbitalState`.
        """
        leapfrog, num_points = self.window(step_size)

        def init(position, rng_key=None):
            return orbital.init(position, logdensity_fn)

        def step(rng_key, state):
            return self._orbit_kernel(
                rng_key,
                state,
                logdensity_fn,
                leapfrog,
                inverse_mass_matrix,
                num_points=num_points,
            )

        return SamplingAlgorithm(init, step)

    def rao_blackwell(
        self,
        extra_fields: dict,
        fn: Callable[[dict], ArrayTree] | None = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
    ) -> ArrayTree:
        """Rao-Blackwellized draws $\\sum_j w_j f(x(z_j))$ over each collected orbit.

        Run ``MCMC.run(..., extra_fields=("info.orbit.position", "info.weights"))`` and pass
        ``mcmc.get_extra_fields()`` (or ``group_by_chain=True``). The orbit positions are mapped
        to constrained sites (and deterministic sites) with :meth:`postprocess_fn`.

        Args:
            extra_fields: dict with ``"info.orbit.position"`` (leading axes ``(..., P)``) and
                ``"info.weights"`` (``(..., P)``).
            fn: function of the dict of constrained sites (default: the sites themselves).
            model_args: model positional arguments (for ``postprocess_fn``).
            model_kwargs: model keyword arguments.

        Returns:
            ``fn``'s output averaged over each orbit, with the leading (draw) axes of
            ``extra_fields``; their mean is the Rao-Blackwellized estimate.
        """
        missing = [k for k in ("info.orbit.position", "info.weights") if k not in extra_fields]
        if missing:
            raise KeyError(
                f"extra_fields lacks {missing}; run MCMC with "
                'extra_fields=("info.orbit.position", "info.weights").'
            )
        weights = jnp.asarray(extra_fields["info.weights"])
        orbits = extra_fields["info.orbit.position"]
        batch = weights.shape[:-1]
        postprocess = self.postprocess_fn(model_args, model_kwargs or {})
        fn = (lambda sites: sites) if fn is None else fn

        def one(orbit, w):
            vals = jax.vmap(lambda z: fn(postprocess(z)))(orbit)

            def average(v):
                ww = w.reshape((-1,) + (1,) * (v.ndim - 1))
                return jnp.sum(jnp.where(ww > 0, ww * v, 0.0), axis=0)

            return jax.tree.map(average, vals)

        flat = jax.tree.map(lambda x: jnp.reshape(x, (-1,) + jnp.shape(x)[len(batch) :]), orbits)
        out = jax.vmap(one)(flat, weights.reshape((-1, weights.shape[-1])))
        return jax.tree.map(lambda x: np.asarray(x).reshape(batch + x.shape[1:]), out)
