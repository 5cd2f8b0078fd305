r"""A NumPyro model as densities in the unconstrained space, for SMC and bounds.

NumPyro's own handlers split the model into a prior and a likelihood in the *unconstrained*
space $u = T^{-1}(\theta)$:

$$\log p_0(u) = \log p(T(u)) + \log|\det J_T(u)|, \qquad
\ell(u) = \log p(y \mid T(u)),$$

where ``p_0`` is ``-potential_energy`` of the model with its observed sites hidden by
``handlers.block`` (the Jacobian factors of the transforms stay in the prior) and ``ell`` is the
difference with the full potential. Observed sites are those with data, passed as keyword
arguments as with ``MCMC.run``; user ``numpyro.factor`` sites count as likelihood.
``check_densities`` checks a model and its data at prior draws before any sampling.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from kernels.types import Array, PRNGKey

__all__ = ["ModelDensities", "split_model", "check_densities"]


def _is_jacobian(site) -> bool:
    name = site["name"]
    return name.startswith("_") and name.endswith("_log_det")


def _is_likelihood(site) -> bool:
    return site["type"] == "sample" and site["is_observed"] and not _is_jacobian(site)


class ModelDensities(NamedTuple):
    """A NumPyro model split into prior and likelihood on a flat unconstrained vector.

    Attributes:
        log_prior: ``u (d,) -> log p_0(u)`` (prior density in unconstrained space, Jacobians
            included).
        log_likelihood: ``u (d,) -> log p(y | T(u))``, the observed sites.
        log_tempered: ``(u, beta) -> log p_0(u) + beta log p(y | T(u))`` (two potential
            evaluations: prior and joint).
        sample_prior: ``key -> u (d,)`` an exact draw from ``p_0``.
        constrain: ``u (d,) -> dict`` of constrained latent and deterministic sites.
        unconstrain: ``dict of constrained latent values -> u (d,)``.
        dim: ``d``.
        observed: names of the observed sites.
        latent: names of the latent sample sites.
    """

    log_prior: Callable[[Array], Array]
    log_likelihood: Callable[[Array], Array]
    log_tempered: Callable[[Array, Array], Array]
    sample_prior: Callable[[PRNGKey], Array]
    constrain: Callable[[Array], dict]
    unconstrain: Callable[[dict], Array]
    dim: int
    observed: tuple[str, ...]
    latent: tuple[str, ...]


def _check_signature(model, args, kwargs):
    try:
        inspect.signature(model).bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(
            f"the model {getattr(model, '__name__', model)}{inspect.signature(model)} cannot be "
            f"called with {len(args)} positional argument(s) and keyword(s) {sorted(kwargs)}: {e}. "
            "Pass the model's arguments positionally and the observed data as keywords, "
            "as with MCMC.run."
        ) from None
    except ValueError:  # no signature (builtins, some callables): let the model call decide
        pass


def split_model(model: Callable, args: tuple = (), kwargs: dict | None = None) -> ModelDensities:
    """Split a NumPyro model into prior and likelihood in unconstrained space.

    Args:
        model: a NumPyro model with continuous latent sites and at least one observed site.
        args: positional arguments of the model.
        kwargs: keyword arguments of the model, the observed data among them.

    Returns:
        `ModelDensities` on a flat unconstrained vector.

    Raises:
        TypeError: the arguments do not fit the model's signature.
        ValueError: no observed site, no latent site, or a discrete latent site.
    """
    kwargs = dict(kwargs or {})
    _check_signature(model, args, kwargs)
    trace = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    latent = {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    observed = tuple(name for name, site in trace.items() if _is_likelihood(site))
    if not observed:
        raise ValueError(
            "the model has no observed site: pass the data as keyword arguments of run(), "
            "e.g. run(key, x, y=y) for numpyro.sample('y', ..., obs=y)"
        )
    if not latent:
        raise ValueError("the model has no latent sample site: nothing to infer")
    for name, site in latent.items():
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"latent site {name!r} is discrete: TemperedSMC needs continuous latent sites; "
                "marginalize it out, or use ppl.ParticleFilter for discrete state-space models"
            )
    values = {name: site["value"] for name, site in latent.items()}
    u0 = unconstrain_fn(model, args, kwargs, values)
    flat0, unravel = ravel_pytree(u0)
    prior_model = handlers.block(model, hide_fn=_is_likelihood)

    def log_prior(u):
        return -potential_energy(prior_model, args, kwargs, unravel(u))

    def log_likelihood(u):
        params = unravel(u)
        joint = -potential_energy(model, args, kwargs, params)
        lp = -potential_energy(prior_model, args, kwargs, params)
        return jnp.where(jnp.isfinite(joint), joint - lp, -jnp.inf)

    def log_tempered(u, beta):
        params = unravel(u)
        joint = -potential_energy(model, args, kwargs, params)
        lp = -potential_energy(prior_model, args, kwargs, params)
        return lp + beta * (joint - lp)

    def sample_prior(key):
        tr = handlers.trace(handlers.seed(prior_model, key)).get_trace(*args, **kwargs)
        vals = {name: tr[name]["value"] for name in latent}
        return ravel_pytree(unconstrain_fn(model, args, kwargs, vals))[0]

    def constrain(u):
        return constrain_fn(model, args, kwargs, unravel(u), return_deterministic=True)

    def unconstrain(values):
        return ravel_pytree(unconstrain_fn(model, args, kwargs, values))[0]

    return ModelDensities(
        log_prior,
        log_likelihood,
        log_tempered,
        sample_prior,
        constrain,
        unconstrain,
        flat0.size,
        observed,
        tuple(latent),
    )


def _partition(tree):
    """Split a pytree into array leaves (traced) and other leaves (static, hashable)."""
    leaves, treedef = jax.tree.flatten(tree)
    is_arr = tuple(isinstance(x, (jax.Array, np.ndarray)) for x in leaves)
    dyn = [x for x, a in zip(leaves, is_arr, strict=True) if a]
    static = tuple(None if a else x for x, a in zip(leaves, is_arr, strict=True))
    return dyn, (treedef, is_arr, static)


def _combine(dyn, spec):
    treedef, is_arr, static = spec
    it = iter(dyn)
    return jax.tree.unflatten(
        treedef, [next(it) if a else s for a, s in zip(is_arr, static, strict=True)]
    )


@partial(jax.jit, static_argnums=(0, 2, 3))
def _probe(model, dyn, spec, num_draws):
    args, kwargs = _combine(dyn, spec)
    dens = split_model(model, args, kwargs)
    u = jax.vmap(dens.sample_prior)(jax.random.split(jax.random.PRNGKey(0), num_draws))
    return jax.vmap(dens.log_prior)(u), jax.vmap(lambda x: dens.log_tempered(x, 1.0))(u)


def check_densities(model: Callable, dyn: list, spec: Any, num_draws: int = 16) -> None:
    """Boundary check of a model and its data at ``num_draws`` fixed draws from the prior.

    Raises:
        ValueError: an observed value is NaN or inf; the prior log density is not finite at a
            prior draw; the joint log density is NaN (a likelihood parameter or factor); or the
            likelihood is zero at every draw (the data lie outside the likelihood's support),
            where tempering cannot start.
    """
    if any(isinstance(x, jax.core.Tracer) for x in dyn):
        return  # inside a user's jit/vmap: values unknown
    args, kwargs = _combine(dyn, spec)
    trace = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    for name, site in trace.items():
        if _is_likelihood(site) and jnp.issubdtype(jnp.result_type(site["value"]), jnp.floating):
            value = np.asarray(site["value"])
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"the observed site {name!r} has {np.sum(~np.isfinite(value))} non-finite "
                    "value(s) (NaN or inf): drop or impute missing observations, or mask them "
                    "with numpyro.handlers.mask"
                )
    lp, joint = (np.asarray(v, np.float64) for v in _probe(model, dyn, spec, num_draws))
    if not np.all(np.isfinite(lp)):
        raise ValueError(
            f"the prior log density is {lp[~np.isfinite(lp)][0]} at a draw from the prior: "
            "check the priors' parameters (positive scales, valid supports)"
        )
    if np.any(np.isnan(joint)):
        raise ValueError(
            "the log-likelihood is NaN at draws from the prior: check the observed data for "
            "NaN values and the likelihood's parameters"
        )
    if np.all(joint == -np.inf):
        raise ValueError(
            f"the log-likelihood is -inf at all {num_draws} draws from the prior: the "
            "observations have zero density under the model (outside the likelihood's "
            "support?), so tempering cannot start; check the data or the likelihood"
        )
