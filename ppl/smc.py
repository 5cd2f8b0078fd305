r"""Tempered SMC for static NumPyro models, with lower and (conditional-SMC) upper log Z bounds.

The model is split by :func:`ppl.densities.split_model` into a prior $\log p_0(u)$ (with the
Jacobian of the transforms) and a likelihood $\ell(u)$ in the unconstrained space.

The sampler targets $\pi_k(u) \propto p_0(u)\, e^{\beta_k \ell(u)}$ for
$0 = \beta_0 < \dots < \beta_K = 1$ (Del Moral, Doucet and Jasra, 2006). Every run is a loop of
:func:`kernels.smc.base.step`: step ``k`` resamples when the ESS falls below a threshold, moves
every particle with ``num_mcmc_steps`` steps of an MCMC kernel invariant for $\pi_{k-1}$ (the
identity at ``k = 1``) and reweights by $w = e^{(\beta_k - \beta_{k-1}) \ell(u)}$; with an
adaptive schedule its fused move also picks $\beta_k$. A final resampling and move at
$\beta_K$ give the samples. $\log \hat Z = \sum_k \log \sum_i \bar w_{k-1}^i w_k^i$ is an
unbiased estimator of $Z$ (a stochastic lower bound on $\log Z$).

Given an exact posterior sample (``run(..., reference=...)``), it runs conditional SMC (Andrieu, Doucet and
Holenstein, 2010): a reference path is drawn backwards from the sample with the same (reversible)
kernels (reverse AIS, Grosse et al. 2015) and clamped at particle 0; the resulting
$\log \hat Z$ satisfies $E[1/\hat Z] = 1/Z$, a stochastic upper bound on ``log Z``.
Bounds need a schedule and kernel parameters that do not depend on the particles: freeze them
from a pilot run (``TemperedSMCResult.frozen()``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels.types import Array, ArrayTree, PRNGKey
from ppl._deprecation import renamed
from ppl.arviz_conversion import to_arviz
from ppl.densities import (
    ModelDensities,
    _combine,
    _partition,
    check_densities,
    split_model,
)

__all__ = [
    "TemperedSMC",
    "TemperedSMCResult",
    "FrozenSchedule",
    "ModelDensities",
    "split_model",
    "to_arviz",
]


# --------------------------------------------------------------------------- kernels
def _resolve_kernel(kernel):
    if isinstance(kernel, str):
        name = kernel.lower()
        try:  # our kernels first
            from kernels import involutive

            return getattr(involutive, name)
        except (ImportError, AttributeError):
            import blackjax

            return getattr(blackjax, {"rwm": "additive_step_random_walk"}.get(name, name))
    if not (hasattr(kernel, "init") and hasattr(kernel, "build_kernel")):
        raise TypeError(
            "kernel must have BlackJAX's low-level `init(position, logdensity_fn)` and "
            "`build_kernel()` (e.g. blackjax.hmc, blackjax.mala, kernels.involutive.hmc), "
            f"got {kernel!r}"
        )
    return kernel


def _kernel_accepts(step_fn, name):
    try:
        return name in inspect.signature(step_fn).parameters
    except (TypeError, ValueError):
        return False


class FrozenSchedule(NamedTuple):
    """Particle-independent SMC settings, frozen from a pilot run so that bounds hold.

    Attributes:
        betas: ``(K + 1,)`` inverse temperatures from 0 to 1.
        step_sizes: ``(K,)`` step size of the move at each temperature.
        inverse_mass_matrices: ``(K, d)`` diagonal inverse mass matrix at each temperature.
    """

    betas: Array
    step_sizes: Array
    inverse_mass_matrices: Array


class TemperedSMCResult(NamedTuple):
    """Output of `TemperedSMC.run`.

    Attributes:
        samples: dict of constrained latent and deterministic sites, each ``(N, ...)``; equally
            weighted draws from the posterior (resampled at the last temperature).
        log_Z: estimate of ``log p(y)`` (scalar).
        positions: ``(N, d)`` final unconstrained particles.
        ess: ``(K,)`` effective sample size after reweighting at each temperature.
        resampled: ``(K,)`` bool, whether each step resampled.
        acceptance_rate: ``(K,)`` mean acceptance rate of the moves (with a
            `FrozenSchedule`, only the final move's, at index ``K - 1``; NaN elsewhere).
        schedule: the `FrozenSchedule` actually used (betas, step sizes, mass matrices).
        num_steps: ``K``, the number of temperatures after 0.
    """

    samples: dict
    log_Z: Array
    positions: Array
    ess: Array
    resampled: Array
    acceptance_rate: Array
    schedule: FrozenSchedule
    num_steps: Array

    def frozen(self) -> FrozenSchedule:
        """The schedule and move parameters of this run, trimmed to ``K`` steps."""
        from kernels.smc import annealing

        k = int(self.num_steps)
        s = self.schedule
        betas = jnp.asarray(annealing.freeze(np.array(s.betas), k), s.betas.dtype)
        return FrozenSchedule(betas, s.step_sizes[:k], s.inverse_mass_matrices[:k])

    def to_arviz(self):
        """``arviz.InferenceData`` with the samples as one chain."""
        return to_arviz(self.samples)


class TemperedSMC:
    """Tempered SMC for a NumPyro model (prior times likelihood^beta, unconstrained space).

    Args:
        model: NumPyro model; data passed to `run` as keywords are its observations.
        kernel: the move, a module/object with BlackJAX's ``init(position, logdensity_fn)``
            and ``build_kernel()`` (``blackjax.hmc``, ``blackjax.mala``,
            ``kernels.involutive.hmc``, ...) or a name ``"hmc"``, ``"mala"``.
        num_particles: ``N``; 1 gives annealed importance sampling (frozen schedule only).
        num_mcmc_steps: kernel steps per temperature.
        kernel_params: extra keyword parameters of the kernel step (e.g.
            ``{"num_integration_steps": 8}``). ``step_size`` here is the initial step size.
        schedule: ``None`` for an ESS-adaptive schedule, an array of betas ``0 = b_0 < ... <
            b_K = 1`` (e.g. ``kernels.smc.annealing.linear(K)`` or ``.sigmoid(K)``), or a
            `FrozenSchedule` (fixes step sizes and mass matrices too), e.g. a pilot run's
            ``result.frozen()``.
        target_ess: adaptive schedule: next beta solves ``CESS = target_ess`` by bisection,
            with the conditional ESS ``(sum_i W_i w_i)^2 / sum_i W_i w_i^2`` of the
            incremental weights ``w_i`` (Zhou, Johansen and Aston, 2016).
        ess_threshold: resample when ``ESS < ess_threshold * N`` (1 = every step, 0 = never).
        resample_threshold: deprecated name of ``ess_threshold``.
        adapt_step_size: scale the step size after each temperature towards
            ``target_acceptance`` (ignored with a `FrozenSchedule`).
        adapt_mass_matrix: set the diagonal inverse mass matrix to the particle variance at
            each temperature, when the kernel takes ``inverse_mass_matrix``.
        max_num_steps: buffer size of the adaptive schedule.
        shard: ``True`` splits the particles across all local devices (``jax.sharding``,
            particle axis; ``num_particles`` divisible by the device count), or a 1-d mesh from
            ``kernels.smc.sharding.particle_mesh(devices)`` for a subset. Log weights and log-likelihoods
            stay replicated and the particles cross devices only when resampling (see
            :mod:`kernels.smc.sharding`), so a seed gives the same result as unsharded.
    """

    @property
    def resample_threshold(self) -> float:
        """Deprecated name of ``ess_threshold``."""
        return self.ess_threshold

    def __init__(
        self,
        model: Callable,
        kernel: Any = "hmc",
        *,
        num_particles: int = 1000,
        num_mcmc_steps: int = 5,
        kernel_params: dict | None = None,
        schedule: Any = None,
        target_ess: float = 0.5,
        ess_threshold: float | None = None,
        resample_threshold: float | None = None,
        adapt_step_size: bool = True,
        target_acceptance: float = 0.7,
        adapt_mass_matrix: bool = True,
        max_num_steps: int = 500,
        shard: Any = False,
    ):
        if num_particles < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        if num_particles == 1 and not isinstance(schedule, FrozenSchedule):
            raise ValueError(
                "num_particles=1 (annealed importance sampling) needs a FrozenSchedule: an "
                "adaptive schedule and step sizes cannot be estimated from one particle"
            )
        if num_mcmc_steps < 1:
            raise ValueError(f"num_mcmc_steps must be at least 1, got {num_mcmc_steps}")
        if not 0 < target_ess < 1:
            raise ValueError(f"target_ess must be in (0, 1), got {target_ess}")
        self.model = model
        self.kernel = _resolve_kernel(kernel)
        self.num_particles = int(num_particles)
        self.num_mcmc_steps = int(num_mcmc_steps)
        self.kernel_params = dict(kernel_params or {})
        self.schedule = self._check_schedule(schedule)
        self.target_ess = float(target_ess)
        self.ess_threshold = float(
            renamed(
                "ess_threshold",
                ess_threshold,
                "resample_threshold",
                resample_threshold,
                0.5,
                "TemperedSMC",
            )
        )
        self.adapt_step_size = bool(adapt_step_size)
        self.target_acceptance = float(target_acceptance)
        self.adapt_mass_matrix = bool(adapt_mass_matrix)
        self.max_num_steps = int(max_num_steps)
        self._checked: dict = {}  # argument signature -> latent site names (validated)
        from kernels.smc import sharding

        self._mesh = sharding.mesh_from_option(shard, self.num_particles)
        step = self.kernel.build_kernel()
        self._takes_step_size = _kernel_accepts(step, "step_size")
        self._takes_imm = _kernel_accepts(step, "inverse_mass_matrix")
        if self._takes_step_size and "step_size" not in self.kernel_params:
            self.kernel_params["step_size"] = 0.5
        if "num_integration_steps" in inspect.signature(step).parameters:
            self.kernel_params.setdefault("num_integration_steps", 5)

    @staticmethod
    def _check_schedule(schedule):
        if schedule is None:
            return None
        if isinstance(schedule, FrozenSchedule):
            betas = np.asarray(schedule.betas)
        else:
            betas = np.asarray(schedule, dtype=float)
        if betas.ndim != 1 or betas.size < 2:
            raise ValueError(f"schedule must be a 1-d array of at least 2 betas, got {betas!r}")
        if betas[0] != 0 or betas[-1] != 1 or np.any(np.diff(betas) <= 0):
            raise ValueError("schedule must increase strictly from beta=0 to beta=1")
        return schedule if isinstance(schedule, FrozenSchedule) else jnp.asarray(betas)

    # ------------------------------------------------------------------ the move
    def _move(self, key, u, beta, dens, step_size, imm):
        """``num_mcmc_steps`` kernel steps on every particle, invariant for
        ``log p_0 + beta * ell`` (:func:`kernels.smc.tempering.tempered_move`).

        Returns ``(positions (N, d), log-likelihoods (N,), mean acceptance rate (N,))``.
        """
        from kernels.smc import tempering

        params = dict(self.kernel_params)
        if self._takes_step_size:
            params["step_size"] = step_size
        if self._takes_imm and imm is not None:
            params["inverse_mass_matrix"] = imm
        move = tempering.tempered_move(
            self.kernel, lambda x: dens.log_tempered(x, beta), self.num_mcmc_steps
        )
        new_u, info = move(key, u, params)
        acc = jnp.mean(info.acceptance_rate, axis=1)
        return new_u, jax.vmap(dens.log_likelihood)(new_u), acc

    def _imm(self, u, log_w):
        """Diagonal inverse mass matrix: the weighted particle variance (when adapted)."""
        if not (self._takes_imm and self.adapt_mass_matrix):
            return self.kernel_params.get("inverse_mass_matrix", jnp.ones(u.shape[1]))
        w = jax.nn.softmax(log_w)[:, None]
        mean = jnp.sum(w * u, 0)
        var = jnp.sum(w * (u - mean) ** 2, 0)
        return jnp.clip(var, 1e-8, 1e8)

    def _next_step_size(self, step_size, acc):
        """``step_size * exp(clip(acc - target_acceptance, -1/2, 1/2))`` when adapted."""
        if self.adapt_step_size and self._takes_step_size:
            return step_size * jnp.exp(jnp.clip(acc - self.target_acceptance, -0.5, 0.5))
        return step_size

    def _final(self, k_res, k_move, state, dens, step_size, imm):
        """Resample (always, systematic) and move at ``beta_K = 1``: the returned equally
        weighted samples. A `kernels.smc.base.step` with log potential 0 (``log_Z`` unchanged).

        Returns ``(positions (N, d), mean acceptance rate)``.
        """
        from kernels.smc import base

        one = jnp.ones((), state.particles.dtype)

        def move(k, u, _):
            u, _, acc = self._move(k, u, one, dens, step_size, imm)
            return u, acc

        state, info = base.step_with_keys(
            k_res,
            k_move,
            state,
            move,
            lambda prev, u: jnp.zeros(u.shape[0], u.dtype),
            ess_threshold=1.0,
            mesh=self._mesh,
        )
        return state.particles, jnp.mean(self._replicate(info.update_info))

    # ------------------------------------------------------------------ drivers
    def _shard(self, tree):
        from kernels.smc import sharding

        return sharding.constrain_fn(self._mesh)(tree)

    def _replicate(self, tree):
        from kernels.smc import sharding

        return sharding.replicate_fn(self._mesh)(tree)

    def _run_fixed(self, key, dens, frozen: FrozenSchedule, reference=None):
        """Fixed schedule on `kernels.smc.sequential.run` ("move, then reweight").

        Step ``t = 1..K``: resample (ESS-triggered), move ``x_t ~ M_{t-1}(x_{t-1}, .)``
        invariant for ``pi_{t-1}`` (the identity at ``t = 1``: ``x_0`` is an exact prior
        draw), reweight by ``(beta_t - beta_{t-1}) ell(x_t)``. Then a final resampling and a
        move at ``beta_K`` give the returned (equally weighted) samples. ``reference``:
        ``(K + 1, d)`` path of particle 0 (conditional SMC).
        """
        from kernels.smc import base, resampling, sequential

        betas = frozen.betas
        K = betas.shape[0] - 1
        n = self.num_particles
        k_smc, k_res, k_move = jax.random.split(key, 3)

        def init_fn(k, _):
            u = jax.vmap(dens.sample_prior)(jax.random.split(k, n))
            return _Particles(u, jax.vmap(dens.log_likelihood)(u), jnp.zeros(n, u.dtype))

        def move(k, x, t):
            i = jnp.maximum(t - 2, 0)
            u, ll, acc = self._move(
                k, x.u, betas[t - 1], dens, frozen.step_sizes[i], frozen.inverse_mass_matrices[i]
            )
            return _Particles(u, ll, acc)

        def propose(k, x, t):  # step 1 keeps the exact prior draws
            return jax.lax.cond(
                t == 1,
                lambda k, x, t: x._replace(acceptance_rate=jnp.ones_like(x.loglik)),
                move,
                k,
                x,
                t,
            )

        path = None
        if reference is not None:
            path = _Particles(
                reference,
                jax.vmap(dens.log_likelihood)(reference),
                jnp.ones(K + 1, reference.dtype),
            )
        res = sequential.run(
            k_smc,
            init_fn=init_fn,
            propose_fn=propose,
            log_weight_fn=lambda prev, new, t: (betas[t] - betas[t - 1]) * new.loglik,
            num_steps=K,
            num_particles=n,
            resampling=resampling.systematic,
            ess_threshold=self.ess_threshold,
            reference=path,
            conditional_resampling=resampling.conditional_multinomial if path else None,
            mesh=self._mesh,
        )
        state = base.SMCState(res.particles.u, res.log_weights, res.log_Z)
        u, acc = self._final(
            k_res,
            k_move,
            state,
            dens,
            frozen.step_sizes[K - 1],
            frozen.inverse_mass_matrices[K - 1],
        )
        accs = jnp.full(K, jnp.nan, u.dtype).at[K - 1].set(acc)
        resampled = res.resampled.at[K - 1].set(True)
        return u, res.log_Z, res.ess[1:], resampled, accs, frozen, jnp.asarray(K)

    def _run_adaptive(self, key, dens, betas_fixed=None):
        r"""ESS-adaptive betas, or the given betas, with the step size and mass matrix adapted.

        A loop of `kernels.smc.base.step` (the order of `_run_fixed`): step ``t`` resamples
        (ESS-triggered), then its fused move runs the MCMC kernel at ``beta_{t-1}`` (the
        identity at ``t = 1``), picks ``beta_t`` (bisection on the conditional ESS of the
        weights after resampling, `kernels.smc.annealing.next_beta_bisection`, or
        ``betas_fixed[t]``; 1 at ``t = max_num_steps``) and returns the increments
        ``(beta_t - beta_{t-1}) ell``. Between steps the step size follows the move's
        acceptance rate (``SMCInfo.update_info``) and the inverse mass matrix of the move at
        ``beta_{t-1}`` is the weighted variance under ``pi_{t-1}`` (``state.log_weights``
        before the step). A final resampling and move at ``beta_K = 1`` (`_final`) give the
        samples. Settings are recorded in buffers of ``max_num_steps``: index ``j`` holds the
        move at ``betas[j + 1]``.
        """
        from kernels.smc import annealing, base
        from kernels.smc import resampling as rs

        n, d = self.num_particles, dens.dim
        M = self.max_num_steps if betas_fixed is None else betas_fixed.shape[0] - 1
        k_init, k_first, key = jax.random.split(key, 3)
        u0 = jax.vmap(dens.sample_prior)(jax.random.split(k_init, n))
        dtype = u0.dtype
        state = base.init(u0, mesh=self._mesh)
        step0 = jnp.asarray(self.kernel_params.get("step_size", 1.0), dtype)

        def advance(key, state, t, beta, step_size, first):
            """Step ``t``: returns the state, its info, the mean acceptance rate, ``beta_t`` and
            the inverse mass matrix of the move."""
            k_res, k_move = jax.random.split(key)
            lw = state.log_weights
            imm = None if first else self._imm(self._replicate(state.particles), lw)
            # the weights the bisection sees: those after the step's ESS trigger (it depends on
            # the weights only, so it is known before the resampling)
            after = jnp.full_like(lw, jax.nn.logsumexp(lw) - jnp.log(n))
            lw_cess = jnp.where(rs.should_resample(lw, self.ess_threshold), after, lw)

            def move(k, u, _):
                if first:  # x_0 are exact prior draws
                    ll, acc = jax.vmap(dens.log_likelihood)(u), jnp.ones(n, dtype)
                else:
                    u, ll, acc = self._move(k, u, beta, dens, step_size, imm)
                u = self._shard(u)
                ll = self._replicate(jnp.where(jnp.isnan(ll), -jnp.inf, ll))

                def inc_fn(b):
                    return (b - beta) * ll

                if betas_fixed is None:
                    nb = annealing.next_beta_bisection(lw_cess, inc_fn, beta, self.target_ess)
                else:
                    nb = betas_fixed[t]
                nb = jnp.where(t == M, 1.0, nb).astype(dtype)
                return u, inc_fn(nb), (acc, nb)

            state, info = base.step_with_keys(
                k_res,
                k_move,
                state,
                move,
                None,
                ess_threshold=self.ess_threshold,
                mesh=self._mesh,
            )
            acc, nb = info.update_info
            return state, info, jnp.mean(self._replicate(acc)), nb, imm

        state, info, _, beta, _ = advance(k_first, state, 1, jnp.zeros((), dtype), step0, True)
        rec = _Record(
            jnp.zeros(M + 1, dtype).at[1].set(beta),
            jnp.zeros(M, dtype),
            jnp.zeros((M, d), dtype),
            jnp.zeros(M, dtype).at[0].set(info.ess),
            jnp.zeros(M, bool),
            jnp.zeros(M, dtype),
        )

        def cond(c):
            _, t, beta, _, _, _ = c
            return (beta < 1.0) & (t < M)

        def body(c):
            state, t, beta, step_size, key, r = c
            key, k = jax.random.split(key)
            state, info, acc, nb, imm = advance(k, state, t + 1, beta, step_size, False)
            j = t - 1  # the move of step t + 1 is at beta_t = betas[j + 1]
            r = _Record(
                r.betas.at[t + 1].set(nb),
                r.step_sizes.at[j].set(step_size),
                r.inverse_mass_matrices.at[j].set(imm),
                r.ess.at[t].set(info.ess),
                r.resampled.at[j].set(info.resampled),
                r.acceptance_rate.at[j].set(acc),
            )
            return state, t + 1, nb, self._next_step_size(step_size, acc), key, r

        one = jnp.ones((), jnp.int32)
        state, K, _, step_size, key, r = jax.lax.while_loop(
            cond, body, (state, one, beta, step0, key, rec)
        )
        imm = self._imm(self._replicate(state.particles), state.log_weights)  # under pi_K
        u, acc = self._final(*jax.random.split(key), state, dens, step_size, imm)
        j = K - 1
        schedule = FrozenSchedule(
            r.betas, r.step_sizes.at[j].set(step_size), r.inverse_mass_matrices.at[j].set(imm)
        )
        resampled = r.resampled.at[j].set(True)
        accs = r.acceptance_rate.at[j].set(acc)
        return u, state.log_Z, r.ess, resampled, accs, schedule, K

    # ------------------------------------------------------------------ public
    def densities(self, *args, **kwargs) -> ModelDensities:
        """The model split into prior and likelihood (see `split_model`)."""
        return split_model(self.model, args, kwargs)

    def run(
        self, key: PRNGKey, *args: Any, reference: ArrayTree | None = None, **kwargs: Any
    ) -> TemperedSMCResult:
        """Run tempered SMC.

        Args:
            key: PRNG key.
            *args: positional arguments of the model.
            reference: optional exact posterior sample, a dict of constrained latent values:
                runs conditional SMC from it and returns a stochastic upper bound on log Z as
                ``log_Z``. Needs a fixed schedule (``schedule=...``) and no step-size
                adaptation (both are frozen by a `FrozenSchedule`).
            **kwargs: keyword arguments of the model, the observed data among them.

        Returns:
            `TemperedSMCResult`.
        """
        dyn, spec = _partition((args, kwargs))
        signature = (spec, tuple((jnp.shape(x), jnp.result_type(x)) for x in dyn))
        latent = self._checked.get(signature)
        if latent is None:  # validate once per argument structure, shapes and dtypes
            latent = split_model(self.model, args, kwargs).latent
            self._checked[signature] = latent
        check_densities(self.model, dyn, spec)
        if reference is not None:
            if not isinstance(self.schedule, FrozenSchedule):
                raise ValueError(
                    "conditional SMC (reference=...) needs particle-independent settings: pass "
                    "schedule=FrozenSchedule(...), e.g. from a pilot run's result.frozen()"
                )
            missing = set(latent) - set(reference)
            if missing:
                raise ValueError(
                    f"reference must hold a constrained value for every latent site; "
                    f"missing {sorted(missing)}"
                )
            reference = {name: jnp.asarray(reference[name]) for name in latent}
        key = jnp.asarray(key)
        if key.ndim == 2 or (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 1):
            return jax.vmap(lambda k: _run_jit(self, k, dyn, spec, reference))(key)
        return _run_jit(self, key, dyn, spec, reference)

    def reference_path(self, key, dens: ModelDensities, u_final: Array, frozen: FrozenSchedule):
        """Backward path ``(K + 1, d)`` from an exact posterior sample (reverse AIS chain).

        `kernels.smc.tempering.reference_path` for the "move, then reweight" order of
        `_run_fixed`: ``x_K = u_final``, ``x_{t-1} ~ M_{t-1}(x_t, .)`` for ``t = K..2``
        (reversible kernels are their own reversals) with the frozen step size and mass matrix
        of forward step ``t``, and ``x_0 = x_1`` (``identity_first_move``: the move of step 1
        keeps the exact prior draws).
        """
        from kernels.smc import tempering

        K = frozen.betas.shape[0] - 1
        params, per_t = dict(self.kernel_params), []

        def at_move(x):  # entry t - 1 holds forward step t's x[t - 2]; entry 0 is not used
            return jnp.concatenate([x[:1], x[: K - 1]], 0)

        if self._takes_step_size:
            params["step_size"] = at_move(frozen.step_sizes)
            per_t.append("step_size")
        if self._takes_imm and frozen.inverse_mass_matrices is not None:
            params["inverse_mass_matrix"] = at_move(frozen.inverse_mass_matrices)
            per_t.append("inverse_mass_matrix")
        return tempering.reference_path(
            key,
            u_final,
            dens.log_prior,
            dens.log_likelihood,
            frozen.betas,
            self.kernel,
            kernel_params=params,
            num_mcmc_steps=self.num_mcmc_steps,
            per_temperature_params=per_t,
            identity_first_move=True,
        )


class _Record(NamedTuple):
    """Per-step buffers of the adaptive run (index ``j``: the move at ``betas[j + 1]``)."""

    betas: Array  # (M + 1,)
    step_sizes: Array  # (M,)
    inverse_mass_matrices: Array  # (M, d)
    ess: Array  # (M,) after the reweighting to betas[j + 1]
    resampled: Array  # (M,) before the move at betas[j + 1]
    acceptance_rate: Array  # (M,)


class _Particles(NamedTuple):
    u: Array  # (N, d) unconstrained positions
    loglik: Array  # (N,)
    acceptance_rate: Array  # (N,) of the last move


@partial(jax.jit, static_argnums=(0, 3))
def _run_jit(smc: TemperedSMC, key, dyn, spec, ref_values):
    args, kwargs = _combine(dyn, spec)
    dens = split_model(smc.model, args, kwargs)
    sched = smc.schedule
    if ref_values is not None:
        ref_u = dens.unconstrain(ref_values)
        k_ref, key = jax.random.split(key)
        sched = _as_arrays(sched)
        path = smc.reference_path(k_ref, dens, ref_u, sched)
        out = smc._run_fixed(key, dens, sched, path)
    elif isinstance(sched, FrozenSchedule):
        out = smc._run_fixed(key, dens, _as_arrays(sched))
    else:
        out = smc._run_adaptive(key, dens, sched)
    u, log_Z, ess, res, acc, frozen, K = out
    return TemperedSMCResult(jax.vmap(dens.constrain)(u), log_Z, u, ess, res, acc, frozen, K)


def _as_arrays(s: FrozenSchedule) -> FrozenSchedule:
    return FrozenSchedule(*(jnp.asarray(x) for x in s))
