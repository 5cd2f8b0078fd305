r"""Particle filtering and twisted SMC for state-space models written in NumPyro.

The user writes the transition as for ``numpyro.contrib.control_flow.scan``::

    def transition(carry, y_t):
        x = numpyro.sample("x", dist.Normal(a * carry, q))
        numpyro.sample("y", dist.Normal(x, r), obs=y_t)
        return x, x

and the same function drives the filter step by step. For each particle the transition runs
under ``handlers.seed``/``handlers.trace``: its latent sample sites are the proposal
$x_t \sim f(x_t \mid x_{t-1})$ (bootstrap filter, Gordon, Salmond and Smith 1993) and its
observed sites give the incremental log weight $\log g(y_t \mid x_t)$. The estimator

$$\log \hat Z = \sum_{t=1}^T \log \sum_i \bar W_{t-1}^i w_t^i$$

is unbiased for $Z = p(y_{1:T})$ (Del Moral 2004), so $E \log \hat Z \le \log Z$.

Optional pieces:

* ``proposal(carry, y_t)``: a NumPyro function with the same latent site names; particles are
  drawn from it and weighted by $g\, f / q$ (f and g from the transition, substituted).
* ``twist(carry, t)``: log twist $\log\psi_t(x_t)$; the target at step ``t`` is
  $p(x_{0:t}, y_{1:t}) \psi_t(x_t)$ and the incremental weight is
  $g_t \psi_t(x_t) / \psi_{t-1}(x_{t-1})$; at the last step $\psi_T = 1$ (the true
  potential replaces the twist), so $\hat Z$ stays unbiased for any twist.
* ``reference``: conditional SMC (Andrieu, Doucet and Holenstein 2010): particle 0 is clamped to
  a given path and always keeps ancestor 0. If the path is an exact posterior sample,
  $E[1/\hat Z] = 1/Z$, so $E \log \hat Z \ge \log Z$ (a stochastic upper bound).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from kernels.types import Array, ArrayTree, PRNGKey
from ppl._deprecation import renamed

__all__ = ["ParticleFilter", "ParticleFilterResult"]


class ParticleFilterResult(NamedTuple):
    """Output of `ParticleFilter.run` (``N`` particles, ``T`` steps).

    Attributes:
        log_Z: estimate of ``log p(y_{1:T})``.
        log_Z_increments: ``(T + 1,)`` per-step terms of ``log_Z`` (index 0: the init).
        ess: ``(T + 1,)`` effective sample size after weighting at each step.
        resampled: ``(T,)`` whether each step resampled its ancestors first.
        carry: final carries, leading axis ``N`` (the filtering particles at ``T``).
        log_weights: ``(N,)`` final normalized log weights.
        latents: dict of the transition's latent sites at step ``T``, ``(N, ...)``.
        ancestors: ``(T, N)`` ancestor indices drawn before each step.
    """

    log_Z: Array
    log_Z_increments: Array
    ess: Array
    resampled: Array
    carry: ArrayTree
    log_weights: Array
    latents: dict
    ancestors: Array


class _Particle(NamedTuple):
    carry: ArrayTree
    latents: dict
    log_w: Array  # log g (+ log f - log q) of the last step
    log_twist: Array


def _site_log_probs(trace):
    """Sum of observed and of latent log densities in a trace."""
    obs, lat = 0.0, 0.0
    for site in trace.values():
        if site["type"] != "sample":
            continue
        lp = site["fn"].log_prob(site["value"])
        if site["scale"] is not None:
            lp = site["scale"] * lp
        if site["is_observed"]:
            obs = obs + jnp.sum(lp)
        else:
            lat = lat + jnp.sum(lp)
    return jnp.asarray(obs), jnp.asarray(lat)


def _latents(trace):
    return {
        name: site["value"]
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _run_traced(fn, key, args, data=None):
    """Run ``fn(*args)`` under seed (and substitute ``data``); return (value, trace)."""
    fn = handlers.seed(fn, key)
    if data is not None:
        fn = handlers.substitute(fn, data=data)
    with handlers.trace() as tr:
        value = fn(*args)
    return value, tr


class ParticleFilter:
    """Bootstrap / guided / twisted particle filter for a NumPyro ``scan``-style transition.

    Args:
        transition: ``transition(carry, y_t) -> (carry, out)`` with ``numpyro.sample`` sites,
            at least one observed with ``obs=y_t`` (or part of it).
        init: the initial carry: a pytree of arrays shared by all particles, or a NumPyro
            function ``init() -> carry`` whose sample sites are drawn from their prior for each
            particle (observed sites in it weight the particles).
        num_particles: ``N``.
        proposal: optional ``proposal(carry, y_t)`` with sample sites named as the transition's
            latent sites; replaces the transition prior as the proposal.
        twist: optional ``twist(carry, t) -> log psi_t`` (scalar per particle) for
            ``t = 0..T-1``; ``psi_T = 1``.
        ess_threshold: resample when ``ESS < ess_threshold * N`` (1 = every step, 0 = never).
        resample_threshold: deprecated name of ``ess_threshold``.
        resampling: ``"systematic"``, ``"stratified"``, ``"multinomial"`` or ``"residual"``
            (``kernels.smc.resampling``; its conditional variant in conditional runs).
        shard: ``True`` splits the particles across all local devices (``jax.sharding``,
            particle axis; ``num_particles`` divisible by the device count), or a 1-d mesh from
            ``kernels.smc.sharding.particle_mesh(devices)`` for a subset. The ``[N]`` log weights stay
            replicated and the particles cross devices only when resampling (see
            :mod:`kernels.smc.sharding`), so a seed gives the same result as unsharded.
    """

    @property
    def resample_threshold(self) -> float:
        """Deprecated name of ``ess_threshold``."""
        return self.ess_threshold

    def __init__(
        self,
        transition: Callable,
        init: Any,
        *,
        num_particles: int = 1000,
        proposal: Callable | None = None,
        twist: Callable | None = None,
        ess_threshold: float | None = None,
        resample_threshold: float | None = None,
        resampling: str = "systematic",
        shard: Any = False,
    ):
        if num_particles < 2:
            raise ValueError(f"num_particles must be at least 2, got {num_particles}")
        if resampling not in ("systematic", "stratified", "multinomial", "residual"):
            raise ValueError(
                f"unknown resampling scheme {resampling!r}: use systematic, stratified, "
                "multinomial or residual"
            )
        if not callable(transition):
            raise TypeError("transition must be a function (carry, y_t) -> (carry, out)")
        self.transition = transition
        self.init = init
        self.num_particles = int(num_particles)
        self.proposal = proposal
        self.twist = twist
        self.ess_threshold = float(
            renamed(
                "ess_threshold",
                ess_threshold,
                "resample_threshold",
                resample_threshold,
                0.5,
                "ParticleFilter",
            )
        )
        self.resampling = resampling
        from kernels.smc import sharding

        self._mesh = sharding.mesh_from_option(shard, self.num_particles)
        self._jitted = jax.jit(self._run, static_argnums=(3,))
        self._probe_jitted = jax.jit(self._probe)
        self._checked: dict = {}

    # ------------------------------------------------------------------ pieces
    def _init_one(self, key, ref0):
        if not callable(self.init):
            return self.init, jnp.zeros(()), {}
        carry, tr = _run_traced(self.init, key, (), ref0)
        obs, _ = _site_log_probs(tr)
        return carry, obs, _latents(tr)

    def _propagate_one(self, key, carry, y, ref_t):
        """One particle, one step: (new carry, log weight, latents)."""
        if self.proposal is None:
            (new, _), tr = _run_traced(self.transition, key, (carry, y), ref_t)
            obs, _ = _site_log_probs(tr)
            return new, obs, _latents(tr)
        if ref_t is None:
            _, trq = _run_traced(self.proposal, key, (carry, y))
            values = _latents(trq)
            _, log_q = _site_log_probs(trq)
        else:
            values = ref_t
            _, trq = _run_traced(self.proposal, key, (carry, y), ref_t)
            _, log_q = _site_log_probs(trq)
        (new, _), tr = _run_traced(self.transition, key, (carry, y), values)
        obs, log_f = _site_log_probs(tr)
        return new, obs + log_f - log_q, _latents(tr)

    def _log_twist(self, carry, t, T):
        if self.twist is None:
            return jnp.zeros(())
        return jnp.where(t >= T, 0.0, jnp.asarray(self.twist(carry, t)).reshape(()))

    # ------------------------------------------------------------------ driver
    def _run(self, key, ys, reference, conditional: bool):
        """One filter on ``kernels.smc.sequential.run``; a particle is a `_Particle`."""
        from kernels.smc import resampling, sequential

        n = self.num_particles
        T = jax.tree.leaves(ys)[0].shape[0]
        y_at = lambda t: jax.tree.map(lambda x: x[t - 1], ys)  # noqa: E731  (t = 1..T)

        def finish(carry, log_w, lat, t):
            return _Particle(carry, lat, jnp.asarray(log_w), self._log_twist(carry, t, T))

        def init_one(k, ref0=None):
            carry, lw, _ = self._init_one(k, ref0)
            lat = jax.tree.map(jnp.zeros_like, self._latent_template(carry, y_at(1)))
            return finish(carry, lw, lat, 0)

        def step_one(k, carry, t, ref_t=None):
            new, lw, lat = self._propagate_one(k, carry, y_at(t), ref_t)
            return finish(new, lw, lat, t)

        def propose(k, x, t):
            keys = jax.random.split(k, n)
            return jax.vmap(lambda kk, c: step_one(kk, c, t))(keys, x.carry)

        path = None
        if conditional:  # the reference particle's states along its path, t = 0..T
            ref_init, ref_steps = reference
            p0 = init_one(key, ref_init)

            def ref_body(p, inp):
                t, ref_t = inp
                q = step_one(key, p.carry, t, ref_t)
                return q, q

            _, ps = jax.lax.scan(ref_body, p0, (jnp.arange(1, T + 1), ref_steps))
            path = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), p0, ps)

        scheme = resampling.SCHEMES[self.resampling]
        res = sequential.run(
            key,
            init_fn=lambda k, _: jax.vmap(init_one)(jax.random.split(k, n)),
            propose_fn=propose,
            log_weight_fn=lambda prev, new, t: new.log_w + new.log_twist - prev.log_twist,
            num_steps=T,
            num_particles=n,
            init_log_weight_fn=lambda x: x.log_w + x.log_twist,
            resampling=scheme,
            ess_threshold=self.ess_threshold,
            reference=path,
            conditional_resampling=resampling.conditional(scheme) if conditional else None,
            mesh=self._mesh,
        )
        x = res.particles
        return ParticleFilterResult(
            res.log_Z,
            res.log_Z_increments,
            res.ess,
            res.resampled,
            x.carry,
            res.log_weights,
            x.latents,
            res.ancestors,
        )

    def _probe(self, ys, num_draws=16):
        """Log weights of ``init`` and of the first step for ``num_draws`` prior particles."""

        def one(k):
            k1, k2 = jax.random.split(k)
            carry, lw0, _ = self._init_one(k1, None)
            _, lw1, _ = self._propagate_one(k2, carry, jax.tree.map(lambda x: x[0], ys), None)
            return jnp.asarray(lw0), jnp.asarray(lw1)

        return jax.vmap(one)(jax.random.split(jax.random.PRNGKey(0), num_draws))

    def _check_values(self, ys):
        """Boundary checks on the data and the first weights (skipped for traced inputs)."""
        leaves = jax.tree.leaves(ys)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return
        for x in leaves:
            x = np.asarray(x)
            if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
                bad = np.nonzero(~np.isfinite(x.reshape(x.shape[0], -1)).all(1))[0]
                raise ValueError(
                    f"ys has non-finite values at time steps {bad[:10].tolist()}: the particle "
                    "filter needs finite observations (drop or impute missing ones)"
                )
        lw0, lw1 = (np.asarray(v, np.float64) for v in self._probe_jitted(ys))
        for name, lw in (("init()", lw0), ("transition(carry, ys[0])", lw1)):
            if np.any(np.isnan(lw)):
                raise ValueError(
                    f"the log weights of {name} are NaN for particles drawn from the model: "
                    "check the observed values and the parameters of the observation sites"
                )
            if np.all(lw == -np.inf):
                raise ValueError(
                    f"the log weights of {name} are -inf for all {lw.size} particles drawn from "
                    "the model: the observation has zero density (outside the support?); check "
                    "the data and the observation distribution"
                )

    def _latent_template(self, carry, y):
        _, _, lat = jax.eval_shape(
            lambda: self._propagate_one(jax.random.PRNGKey(0), carry, y, None)
        )
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), lat)

    # ------------------------------------------------------------------ public
    def run(
        self,
        key: PRNGKey,
        ys: ArrayTree,
        *,
        reference: dict | None = None,
        reference_init: dict | None = None,
    ) -> ParticleFilterResult:
        """Filter the observations ``ys``.

        Args:
            key: PRNG key; a batch of keys ``(R, 2)`` runs ``R`` independent filters (vmapped),
                and then ``reference``/``reference_init`` need a leading axis ``R`` too.
            ys: observations, a pytree of arrays with leading time axis ``T`` (the ``xs`` of
                ``scan``).
            reference: conditional SMC: dict of the transition's latent site values along the
                reference path, each with leading axis ``T``.
            reference_init: values of the sample sites of ``init`` on the reference path (when
                ``init`` is a function).

        Returns:
            `ParticleFilterResult` (with a leading run axis for a batch of keys).
        """
        leaves = jax.tree.leaves(ys)
        if not leaves or any(jnp.ndim(x) < 1 for x in leaves):
            raise ValueError("ys must be arrays with a leading time axis T")
        T = leaves[0].shape[0]
        if any(x.shape[0] != T for x in leaves):
            raise ValueError(
                f"every leaf of ys needs the same leading time axis, got {[x.shape for x in leaves]}"
            )
        key = jnp.asarray(key)
        batched = key.ndim == 2
        first = (lambda t: jax.tree.map(lambda x: x[0], t)) if batched else (lambda t: t)
        shapes = lambda t: jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), t)  # noqa: E731
        leaves_sig = lambda t: tuple(jax.tree.leaves(shapes(t))) + (jax.tree.structure(t),)  # noqa: E731
        signature = (batched, leaves_sig(ys), leaves_sig(reference), leaves_sig(reference_init))
        checked = self._checked.get(signature)
        if checked is None:  # validate once per structure, shapes and dtypes
            checked = self._check(
                ys, None if reference is None else first(reference), first(reference_init)
            )
            self._checked[signature] = checked
        latent, init_latent = checked
        self._check_values(ys)
        conditional = reference is not None
        ref = None
        if conditional:
            ref_init = (
                {k: jnp.asarray(reference_init[k]) for k in init_latent} if init_latent else None
            )
            ref = (ref_init, {k: jnp.asarray(reference[k]) for k in latent})
        if batched:
            return jax.vmap(lambda k, r: self._jitted(k, ys, r, conditional))(key, ref)
        return self._jitted(key, ys, ref, conditional)

    def _check(self, ys, reference, reference_init):
        """Trace one particle at t = 0 to report mistakes before jit."""
        key = jax.random.PRNGKey(0)
        try:
            carry, _, init_lat = self._init_one(key, None)
            y0 = jax.tree.map(lambda x: x[0], ys)
            (_, _), tr = _run_traced(self.transition, key, (carry, y0))
        except Exception as e:
            raise ValueError(
                f"running init() and transition(carry, ys[0]) for one particle failed: "
                f"{type(e).__name__}: {e}"
            ) from e
        if not any(s["type"] == "sample" and s["is_observed"] for s in tr.values()):
            raise ValueError(
                "the transition has no observed sample site: observe the data with "
                "numpyro.sample(name, dist, obs=y_t) inside transition(carry, y_t)"
            )
        latent = set(_latents(tr))
        if reference is not None:
            missing = latent - set(reference)
            if missing:
                raise ValueError(f"reference lacks the transition's latent sites {sorted(missing)}")
            T = jax.tree.leaves(ys)[0].shape[0]
            for name in latent:
                if jnp.shape(reference[name])[:1] != (T,):
                    raise ValueError(
                        f"reference[{name!r}] must have leading time axis {T}, "
                        f"got shape {jnp.shape(reference[name])}"
                    )
            if callable(self.init) and set(init_lat) - set(reference_init or {}):
                raise ValueError(
                    f"reference_init must give the init sites {sorted(init_lat)} of the reference path"
                )
        if self.proposal is not None:
            _, trq = _run_traced(self.proposal, key, (carry, jax.tree.map(lambda x: x[0], ys)))
            if set(_latents(trq)) != latent:
                raise ValueError(
                    f"proposal sites {sorted(_latents(trq))} differ from the transition's latent "
                    f"sites {sorted(latent)}"
                )
        return sorted(latent), sorted(init_lat)
