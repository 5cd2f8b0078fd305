r"""``DeterministicGibbs``: discrete deterministic Gibbs (:mod:`kernels.flows`) as a NumPyro kernel.

For models whose latent sites are all discrete with finite support. Each element of each latent
site is one coordinate, moving through the values of its ``enumerate_support`` with speed
$c_i / p(x_i \mid x_{-i})$ (:func:`kernels.flows.discrete_deterministic_gibbs`). Every MCMC
By default (``output="times"``) every MCMC sample is the state of the flow observed at
equally spaced times $t_k = k\,\Delta$: the process $X(t)$ preserves $\pi$ and its time
averages converge to $\pi$-expectations, so $\frac1K\sum_k f(X(t_k)) \to E_\pi f$ and the
unweighted samples, ``print_summary`` and arviz are right as they stand. $\Delta$ defaults to the
mean time of an event measured on a pilot run of each chain (about one event per sample).
With ``output="events"`` every sample is one event of the flow: the state occupied and the
time spent in it. Those samples are weighted: collect ``extra_fields=("weight",)`` and
estimate $\sum_t w_t f(z_t) / \sum_t w_t$ (:func:`resample` gives an unweighted view); read
unweighted they are biased.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import log_density
from numpyro.util import is_prng_key

from kernels import flows
from kernels.types import Array, ArrayTree, PRNGKey

__all__ = ["DeterministicGibbs", "DGibbsSample", "resample"]


class DGibbsSample(NamedTuple):
    """State of :class:`DeterministicGibbs`.

    Attributes:
        z: site values: the state observed at the last observation time (``output="times"``),
            or the state occupied during the last event (``output="events"``).
        weight: the time the sample stands for: the observation interval, or the time spent
            in the event.
        inner: the :class:`kernels.flows.DGibbsState` (integer state, cell positions, speeds).
        num_density_evals: log-joint evaluations since the previous sample.
        position: the integer state occupied now (flattened support indices).
        remaining: the time left in the current event (``output="times"``; 0 otherwise).
        interval: the observation interval $\\Delta$ of this chain.
    """

    z: ArrayTree
    weight: Array
    inner: flows.DGibbsState
    num_density_evals: Array
    position: Array
    remaining: Array
    interval: Array


class DeterministicGibbs(MCMCKernel):
    """Discrete deterministic Gibbs for NumPyro models with finite discrete latent sites.

    Example::

        mcmc = MCMC(DeterministicGibbs(model), num_warmup=0, num_samples=2000, num_chains=8,
                    chain_method="vectorized")
        mcmc.run(key, data)
        mcmc.print_summary()                      # unweighted: the flow at equal times

        # the weighted events instead
        mcmc = MCMC(DeterministicGibbs(model, output="events"), ...)
        mcmc.run(key, data, extra_fields=("weight",))
        w, z = mcmc.get_extra_fields()["weight"], mcmc.get_samples()["z"]
        estimate = (w[:, None] * z).sum(0) / w.sum()

    Args:
        model: a NumPyro model whose latent (non-observed) sites all have
            ``has_enumerate_support``.
        speed: optional speeds $c_i > 0$ (a scalar, or one per flattened coordinate in site
            order); default $c_i \\sim U(0.5, 1.5)$ per chain.
        output: ``"times"`` (default): each sample is the flow observed at the next of equally
            spaced times, unweighted; ``"events"``: each sample is one event, weighted by the
            time spent in it.
        interval: the spacing $\\Delta > 0$ of the observation times (``output="times"``);
            default: the mean event time over a pilot of ``max(32, 4 d)`` events per chain.
    """

    sample_field = "z"

    def __init__(
        self,
        model: Callable,
        speed: Array | float | None = None,
        *,
        output: str = "times",
        interval: float | None = None,
    ):
        if not callable(model):
            raise TypeError(
                f"model must be a NumPyro model (callable), got {type(model).__name__}."
            )
        if output not in ("times", "events"):
            raise ValueError(f'output must be "times" or "events", got {output!r}.')
        if interval is not None and not float(interval) > 0:
            raise ValueError(f"interval must be positive, got {interval!r}.")
        self._model = model
        self._speed = speed
        self._output = output
        self._interval = interval
        self._step = None
        self._to_values = None

    @property
    def model(self) -> Callable:
        """The NumPyro model (arviz reads it)."""
        return self._model

    @property
    def default_fields(self) -> tuple[str, ...]:
        """Fields collected by default: ``("z",)``; add ``"weight"`` via ``extra_fields``."""
        return ("z",)

    def _setup(self, rng_key, model_args, model_kwargs):
        tr = handlers.trace(handlers.seed(self._model, rng_key)).get_trace(
            *model_args, **model_kwargs
        )
        sites = {
            n: s
            for n, s in tr.items()
            if s["type"] == "sample"
            and not s["is_observed"]
            and not s.get("infer", {}).get("is_auxiliary")
        }
        if not sites:
            raise ValueError("DeterministicGibbs: the model has no latent sample sites.")
        layout, supports = [], []
        for name, site in sites.items():
            fn = site["fn"]
            if not getattr(fn, "has_enumerate_support", False):
                raise ValueError(
                    f"DeterministicGibbs needs discrete sites with finite support; site {name!r} "
                    f"has {type(fn).__name__}. Marginalize or reparametrize continuous sites."
                )
            values = np.asarray(fn.enumerate_support(expand=False)).reshape(-1)
            layout.append((name, np.shape(site["value"]), values))
            supports += [len(values)] * int(np.prod(np.shape(site["value"]), dtype=int))

        def to_indices(params):
            """Flattened support indices of a dict of site values (missing: the prior draw)."""
            x = []
            for name, shape, values in layout:
                value = params.get(name, sites[name]["value"])
                v = np.asarray(value).reshape(-1)
                if v.size != int(np.prod(shape, dtype=int)):
                    raise ValueError(
                        f"init_params[{name!r}] has {v.size} entries, the site has shape {shape}."
                    )
                index = np.argmin(np.abs(values[:, None] - v[None]), axis=0)
                if not np.allclose(values[index], v):
                    raise ValueError(
                        f"init_params[{name!r}] = {value} is outside the support {values}."
                    )
                x += index.tolist()
            return jnp.asarray(x, jnp.int32)

        def to_values(x):
            out, i = {}, 0
            for name, shape, values in layout:
                n = int(np.prod(shape, dtype=int))
                out[name] = jnp.asarray(values)[x[i : i + n]].reshape(shape)
                i += n
            return out

        def log_joint(x):
            return log_density(self._model, model_args, model_kwargs, to_values(x))[0]

        init, step = flows.discrete_deterministic_gibbs(log_joint, supports)
        self._num_coords = len(supports)
        return init, step, to_values, to_indices

    def init(
        self,
        rng_key: PRNGKey,
        num_warmup: int,
        init_params: Any,
        model_args: tuple,
        model_kwargs: dict,
    ) -> DGibbsSample:
        """Trace the model, enumerate supports, and start at ``init_params`` or a prior draw.

        Args:
            rng_key: PRNG key (a batch of keys for vectorized chains).
            num_warmup: unused (no adaptation; warmup events are discarded by ``MCMC``).
            init_params: optional dict of initial site values (in the sites' own values; with a
                leading chain axis for several chains).
            model_args: positional arguments of the model.
            model_kwargs: keyword arguments of the model.

        Returns:
            The initial :class:`DGibbsSample`.
        """
        batched = not is_prng_key(rng_key)
        first = rng_key[0] if batched else rng_key
        init, self._step, self._to_values, to_indices = self._setup(
            first, model_args, model_kwargs or {}
        )
        params = {} if init_params is None else dict(init_params)
        if batched:
            n = len(rng_key)
            x0 = jnp.stack([to_indices({k: v[c] for k, v in params.items()}) for c in range(n)])
        else:
            x0 = to_indices(params)

        step = self._step
        pilot = max(32, 4 * self._num_coords)

        def one(key, x0):
            inner = init(key, x0, self._speed)
            dtype = inner.cell.dtype
            if self._output == "events":
                interval = jnp.zeros((), dtype)
            elif self._interval is not None:
                interval = jnp.asarray(self._interval, dtype)
            else:  # mean event time on a pilot run from the same start
                _, times = jax.lax.scan(_pilot_body(step), inner, None, pilot)
                interval = jnp.mean(times).astype(dtype)
            zero = jnp.zeros((), dtype)
            return DGibbsSample(
                self._to_values(x0), zero, inner, jnp.zeros((), jnp.int32), x0, zero, interval
            )

        if batched:
            return jax.vmap(one)(rng_key, x0)
        return one(jax.random.fold_in(rng_key, 1), x0)

    def sample(self, state: DGibbsSample, model_args: tuple, model_kwargs: dict) -> DGibbsSample:
        """The next sample: the flow observed ``interval`` later (``output="times"``), or its
        next event, the state occupied and the time spent in it (``output="events"``).

        Args:
            state: current state.
            model_args: unused (fixed at init).
            model_kwargs: unused.

        Returns:
            The next :class:`DGibbsSample`.
        """
        if self._step is None:
            raise RuntimeError("Call init (or MCMC.run) before sample.")

        step = self._step

        def one_event(state):
            inner, info = step(state.inner)
            zero = jnp.zeros((), info.weight.dtype)
            return DGibbsSample(
                self._to_values(info.position),
                info.weight,
                inner,
                info.num_density_evals,
                info.position,
                zero,
                state.interval,
            )

        def one_time(state):
            # X(t + interval): the state occupied `interval` later
            inner, position, remaining, _, evals = flows.discrete_gibbs.advance(
                step, state.inner, state.position, state.remaining, state.interval
            )
            return DGibbsSample(
                self._to_values(position),
                state.interval,
                inner,
                evals,
                position,
                remaining,
                state.interval,
            )

        one = one_event if self._output == "events" else one_time
        if jnp.ndim(state.weight) > 0:  # vectorized chains
            return jax.vmap(one)(state)
        return one(state)

    def postprocess_fn(self, args: tuple, kwargs: dict) -> Callable:
        """Identity: the sites are sampled in their own (discrete) values.

        Args:
            args: model positional arguments (unused).
            kwargs: model keyword arguments (unused).

        Returns:
            ``z -> z``.
        """
        return lambda z: z

    def get_diagnostics_str(self, state: DGibbsSample) -> str:
        """Progress-bar text: the time the last sample stands for.

        Args:
            state: current state.

        Returns:
            The text.
        """
        return f"time {float(state.weight):.3g}"


def _pilot_body(step):
    def body(inner, _):
        inner, info = step(inner)
        return inner, info.weight

    return body


def resample(key: PRNGKey, samples: dict, weights: Array, num_samples: int | None = None) -> dict:
    """Unweighted view of weighted samples (systematic resampling by the times spent).

    Args:
        key: PRNG key.
        samples: ``mcmc.get_samples()`` (leading axis: events).
        weights: ``mcmc.get_extra_fields()["weight"]``, same leading axis.
        num_samples: number of draws (default: as many as events).

    Returns:
        A dict like ``samples`` whose draws have equal weights.
    """
    weights = jnp.asarray(weights)
    if weights.ndim != 1:
        raise ValueError(
            f"weights must be one-dimensional (events), got shape {weights.shape}; use "
            "get_samples() and get_extra_fields() without group_by_chain."
        )
    n = weights.shape[0] if num_samples is None else int(num_samples)
    return flows.resample(key, samples, weights, n)
