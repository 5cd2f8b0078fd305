"""Implicit Metropolis-Hastings from NumPyro: refine a sampler with no density toward samples.

The proposal is a NumPyro guide (with its fitted params) or a ``numpyro.infer.Predictive``:
anything that produces samples of the latent sites without a density. The target is a dict of
samples ``{site: array (num_samples, *site_shape)}``. ``ImplicitMH`` trains the discriminator of
``kernels.implicit_mh`` on the flattened sites and runs vmapped independent implicit MH chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer import Predictive

from kernels import implicit_mh as imh
from kernels.types import Array, PRNGKey
from ppl.discriminator import DiscriminatorFit, fit_discriminator

__all__ = ["ImplicitMH", "ImplicitMHResult"]


class ImplicitMHResult(NamedTuple):
    """Output of ``ImplicitMH.run``.

    Attributes:
        samples: ``{site: (num_chains, *site_shape)}``, the chains' final states.
        acceptance_rate: mean acceptance rate per chain, shape (num_chains,).
        tv_bound: the discriminator's bound on the total-variation distance between the
            chains' stationary law and the target (``kernels.implicit_mh.tv_bound``; 1 unless
            ``loss_optimal`` or ``exact_log_ratio`` was given to ``fit``).
    """

    samples: dict
    acceptance_rate: Array
    tv_bound: Array


class ImplicitMH:
    """Independent implicit MH with a NumPyro guide or Predictive as proposal.

    Args:
        proposal: a ``numpyro.infer.Predictive`` (its first draw per key is used) or a guide
            callable ``guide(*model_args, **model_kwargs)``.
        target_samples: ``{site: array (num_samples, *site_shape)}`` samples of the target.
        params: guide parameters (e.g. ``svi_result.params``), for a guide proposal.
        model_args: positional arguments passed to the guide / Predictive.
        model_kwargs: keyword arguments passed to the guide / Predictive.

    Example:
        >>> mh = ImplicitMH(guide, {"mu": mu_samples}, params=svi_result.params)
        >>> mh.fit(jax.random.key(0), num_steps=1000)
        >>> result = mh.run(jax.random.key(1), num_chains=1000, num_steps=50)
    """

    def __init__(
        self,
        proposal: Predictive | Callable,
        target_samples: dict,
        *,
        params: dict | None = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
    ):
        if not isinstance(target_samples, dict) or not target_samples:
            raise ValueError("target_samples must be a non-empty dict {site: samples}.")
        self.sites = sorted(target_samples)
        sizes = {k: np.shape(v)[0] for k, v in target_samples.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"target_samples sites have different numbers of samples: {sizes}.")
        kwargs = model_kwargs or {}
        if isinstance(proposal, Predictive):

            def draw(key):
                out = proposal(key, *model_args, **kwargs)
                return {k: out[k][0] for k in self.sites}
        else:

            def draw(key):
                g = handlers.substitute(handlers.seed(proposal, key), data=params or {})
                tr = handlers.trace(g).get_trace(*model_args, **kwargs)
                return {k: tr[k]["value"] for k in self.sites}

        one = {k: jnp.asarray(v[0]) for k, v in target_samples.items()}
        _, self._unravel = ravel_pytree(one)
        try:
            probe = jax.eval_shape(draw, jax.random.key(0))
        except KeyError as err:
            raise ValueError(
                f"the proposal does not produce target site {err}; target sites: {self.sites}."
            ) from err
        for k in self.sites:
            if probe[k].shape != one[k].shape:
                raise ValueError(
                    f"site {k!r}: proposal gives shape {probe[k].shape}, target samples "
                    f"{one[k].shape}."
                )
        self.sample_proposal = lambda key: ravel_pytree(draw(key))[0]
        self.target = np.asarray(
            jax.vmap(lambda t: ravel_pytree(t)[0])(
                {k: jnp.asarray(target_samples[k]) for k in self.sites}
            )
        )
        self.fit_result: DiscriminatorFit | None = None

    def fit(self, key: PRNGKey, **fit_kwargs: Any) -> DiscriminatorFit:
        """Train the discriminator (:func:`ppl.discriminator.fit_discriminator`).

        Args:
            key: PRNG key.
            **fit_kwargs: forwarded to ``fit_discriminator`` (num_steps, batch_size, hidden,
                loss_optimal, exact_log_ratio, ...); functions of a point take the sites
                flattened in sorted order (``jax.flatten_util.ravel_pytree``).

        Returns:
            The ``DiscriminatorFit`` (also stored as ``self.fit_result``).
        """
        self.fit_result = fit_discriminator(key, self.target, self.sample_proposal, **fit_kwargs)
        return self.fit_result

    def run(self, key: PRNGKey, num_chains: int = 1000, num_steps: int = 50) -> ImplicitMHResult:
        """Run ``num_chains`` vmapped chains for ``num_steps`` steps, started from proposal draws.

        Args:
            key: PRNG key.
            num_chains: parallel chains.
            num_steps: MH steps per chain.

        Returns:
            ``ImplicitMHResult`` with the final states as a dict of sites.
        """
        if self.fit_result is None:
            raise RuntimeError("call ImplicitMH.fit(key) before run().")
        alg = imh.independent(self.sample_proposal, self.fit_result.log_ratio)
        k0, k1 = jax.random.split(key)
        x0 = jax.vmap(self.sample_proposal)(jax.random.split(k0, num_chains))
        alg.init(x0[0])  # boundary checks

        @jax.jit
        def go(x0, key):
            state = jax.vmap(alg.init)(x0)

            def body(s, k):
                s, info = jax.vmap(alg.step)(jax.random.split(k, num_chains), s)
                return s, info.acceptance_rate

            state, acc = jax.lax.scan(body, state, jax.random.split(key, num_steps))
            return state.position, acc.mean(0)

        pos, acc = go(x0, k1)
        samples = jax.vmap(self._unravel)(pos)
        return ImplicitMHResult(samples, acc, self.fit_result.tv_bound)
