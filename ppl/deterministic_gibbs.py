"""``DeterministicGibbs``: discrete deterministic Gibbs (kernels.flows) as a NumPyro MCMC kernel.

For models whose latent sites are all discrete with finite support. Each element of each latent
site is one coordinate, moving through the values of ``enumerate_support``. Samples are weighted:
the field ``weight`` (``extra_fields=("weight",)``) is the time spent in each recorded state, and
estimates are $\\sum_t w_t f(z_t) / \\sum_t w_t$ (see ``kernels.flows``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.infer.util import log_density

from kernels import flows
from kernels.types import Array, ArrayTree

__all__ = ["DeterministicGibbs", "DGibbsSample"]


class DGibbsSample(NamedTuple):
    """Kernel state: ``z`` (site values of the state occupied), ``weight`` (time spent in it),
    ``inner`` (the :class:`kernels.flows.DGibbsState`)."""

    z: ArrayTree
    weight: Array
    inner: flows.DGibbsState


class DeterministicGibbs(numpyro.infer.mcmc.MCMCKernel):
    """Discrete deterministic Gibbs for NumPyro models with finite discrete latent sites.

    Args:
        model: a NumPyro model whose latent (non-observed) sites all have
            ``has_enumerate_support``.
        speed: optional speeds $c_i$ (one per flattened coordinate); default $U(0.5, 1.5)$.
    """

    sample_field = "z"

    def __init__(self, model: Callable, speed: Array | None = None):
        self._model = model
        self._speed = speed
        self._step = None

    @property
    def model(self):
        """The NumPyro model."""
        return self._model

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
            shape = np.shape(site["value"])
            layout.append((name, shape, jnp.asarray(values)))
            supports += [len(values)] * int(np.prod(shape, dtype=int))
        self._layout = layout

        def to_values(x):
            out, i = {}, 0
            for name, shape, values in layout:
                n = int(np.prod(shape, dtype=int))
                out[name] = values[x[i : i + n]].reshape(shape)
                i += n
            return out

        def log_joint(x):
            return log_density(self._model, model_args, model_kwargs, to_values(x))[0]

        self._to_values = to_values
        init, step = flows.discrete_deterministic_gibbs(log_joint, supports)
        x0 = []
        for name, _shape, values in layout:
            v = np.asarray(sites[name]["value"]).reshape(-1)
            x0 += [
                int(np.argmin(np.abs(np.asarray(values)[:, None] - v[None]), axis=0)[j])
                for j in range(v.size)
            ]
        return init, step, jnp.asarray(x0, jnp.int32)

    def init(
        self,
        rng_key: Array,
        num_warmup: int,
        init_params: Any,
        model_args: tuple,
        model_kwargs: dict,
    ) -> DGibbsSample:
        """Trace the model, enumerate supports, and start at the model's prior draw.

        Args:
            rng_key: PRNG key (a batch of keys for vectorized chains).
            num_warmup: unused (no adaptation).
            init_params: unused.
            model_args: positional arguments of the model.
            model_kwargs: keyword arguments of the model.

        Returns:
            the initial :class:`DGibbsSample`.
        """
        batched = jnp.ndim(rng_key) > 0 and not jax.dtypes.issubdtype(rng_key.dtype, jnp.uint32)
        batched = batched or (jnp.ndim(rng_key) > 1)
        first = rng_key[0] if batched else rng_key
        init, step, x0 = self._setup(first, model_args, model_kwargs)
        self._step = step

        def one(key):
            inner = init(key, x0, self._speed)
            return DGibbsSample(self._to_values(x0), jnp.zeros(()), inner)

        return jax.vmap(one)(rng_key) if batched else one(jax.random.fold_in(rng_key, 1))

    def sample(self, state: DGibbsSample, model_args: tuple, model_kwargs: dict) -> DGibbsSample:
        """One event of the flow: returns the state occupied and the time spent in it.

        Args:
            state: current state.
            model_args: unused (fixed at init).
            model_kwargs: unused.

        Returns:
            the next :class:`DGibbsSample`.
        """

        def one(inner):
            inner, info = self._step(inner)
            return DGibbsSample(self._to_values(info.position), info.weight, inner)

        if jnp.ndim(state.weight) > 0:  # vectorized chains
            return jax.vmap(one)(state.inner)
        return one(state.inner)

    def postprocess_fn(self, args, kwargs):
        """Identity: sites are sampled in their own (discrete) values."""
        return lambda z: z
