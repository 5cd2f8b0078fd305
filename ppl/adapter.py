r"""Any BlackJAX-style kernel as a ``numpyro.infer.MCMCKernel``, with NumPyro's warmup.

:class:`BlackJAXKernel` runs a kernel factory

``kernel_factory(logdensity_fn, step_size, inverse_mass_matrix) -> blackjax.base.SamplingAlgorithm``

on a NumPyro model (or a potential function) inside ``numpyro.infer.MCMC``. The model goes
through NumPyro's own machinery: :func:`numpyro.infer.util.initialize_model` gives the
unconstrained potential $U(z) = -\log p(x(z), y) - \log|\det J_{x}(z)|$, the initial point
(``init_strategy``) and ``postprocess_fn`` (constrained values and deterministic sites); the
factory receives ``logdensity_fn(z) = -U(z)`` on the dict of unconstrained sites.

Warmup is NumPyro's :func:`numpyro.infer.hmc_util.warmup_adapter`, the same as
``numpyro.infer.HMC``: dual averaging of $\log\epsilon$ toward ``target_accept_prob`` (Hoffman
and Gelman 2014, Sec. 3.2) and Stan's windowed (co)variance estimate of $M^{-1}$ (diagonal or
dense, regularised), optionally with NumPyro's heuristic step-size search at each window. The
factory is called again at every step with the current step size and inverse mass matrix (the
closures are rebuilt inside ``jit``: no recompilation); the inner kernel's state is carried
unchanged, so kernels with persistent auxiliary state (momentum, direction) keep it.

The inverse mass matrix is ``(d,)`` (diagonal) or ``(d, d)`` (dense) in the order of
``jax.flatten_util.ravel_pytree`` of the position, which is also the order BlackJAX's metrics
use: any BlackJAX kernel with an ``inverse_mass_matrix`` argument works unchanged.

Extension points for subclasses (e.g. ``ppl.OrbitalMCMC``), all optional:

* :meth:`BlackJAXKernel.make_algorithm`: build the ``SamplingAlgorithm`` from the log density
  and the adapted parameters (default: call ``kernel_factory``);
* :meth:`BlackJAXKernel.accept_prob`: the statistic dual averaging drives to
  ``target_accept_prob`` (default: ``info.acceptance_rate``);
* :meth:`BlackJAXKernel.num_steps`: gradient evaluations of one transition (default:
  ``info.num_grad_evals`` or ``info.num_integration_steps``, else 1);
* :meth:`BlackJAXKernel.diverging`: default ``info.is_divergent`` (else False);
* :attr:`BlackJAXKernel.default_fields` and :meth:`BlackJAXKernel.get_diagnostics_str`.

The whole ``info`` of the last transition is kept in the state, so any of its fields can be
collected with ``extra_fields=("info.<field>",)``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.infer.hmc import momentum_generator
from numpyro.infer.hmc_util import (
    HMCAdaptState,
    IntegratorState,
    euclidean_kinetic_energy,
    find_reasonable_step_size,
    warmup_adapter,
)
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import ParamInfo, initialize_model
from numpyro.util import identity, is_prng_key

from kernels.types import Array, ArrayTree, PRNGKey

__all__ = ["BlackJAXKernel", "BlackJAXState", "KernelFactory"]

KernelFactory = Callable[[Callable, Array, Array], SamplingAlgorithm]
"""``(logdensity_fn, step_size, inverse_mass_matrix) -> SamplingAlgorithm``."""


class BlackJAXState(NamedTuple):
    """State of :class:`BlackJAXKernel` (field names follow ``numpyro.infer.hmc.HMCState``).

    Attributes:
        i: iteration (warmup included).
        z: unconstrained position (dict of sites for a model, or the ``potential_fn`` input).
        potential_energy: $U(z) = -\\log p(z)$.
        num_steps: gradient evaluations spent by the last transition.
        accept_prob: acceptance statistic of the last transition.
        mean_accept_prob: running mean of ``accept_prob`` (warmup and sampling separately).
        diverging: whether the last transition diverged.
        adapt_state: NumPyro's ``HMCAdaptState`` (``step_size``, ``inverse_mass_matrix``, ...).
        kernel_state: the inner BlackJAX kernel's state.
        info: the inner kernel's info of the last transition.
        rng_key: PRNG key.
    """

    i: Array
    z: ArrayTree
    potential_energy: Array
    num_steps: Array
    accept_prob: Array
    mean_accept_prob: Array
    diverging: Array
    adapt_state: HMCAdaptState
    kernel_state: Any
    info: Any
    rng_key: PRNGKey


class BlackJAXKernel(MCMCKernel):
    """A BlackJAX-style kernel factory as a NumPyro MCMC kernel with NumPyro's warmup.

    Example::

        import blackjax
        from numpyro.infer import MCMC
        from ppl import BlackJAXKernel

        factory = lambda ld, eps, imm: blackjax.hmc(ld, eps, imm, num_integration_steps=10)
        mcmc = MCMC(BlackJAXKernel(model, kernel_factory=factory), num_warmup=500,
                    num_samples=1000, num_chains=4, chain_method="vectorized")
        mcmc.run(jax.random.key(0), data)
        mcmc.print_summary()

    Args:
        model: NumPyro model (exactly one of ``model`` and ``potential_fn``).
        potential_fn: potential energy $U(z) = -\\log p(z)$ of a pytree ``z``; then pass
            ``init_params`` to ``MCMC.run``.
        kernel_factory: ``(logdensity_fn, step_size, inverse_mass_matrix) ->
            SamplingAlgorithm`` whose ``info`` has ``acceptance_rate``. Subclasses may leave it
            None and override :meth:`make_algorithm` instead.
        step_size: initial step size.
        inverse_mass_matrix: initial inverse mass matrix: ``(d,)`` or ``(d, d)`` (ravelled
            order), or NumPyro's dict ``{(site, ...): (n,) or (n, n)}`` of blocks; identity if None.
        adapt_step_size: dual averaging of the step size during warmup.
        adapt_mass_matrix: windowed estimate of the inverse mass matrix during warmup.
        dense_mass: dense (True) or diagonal (False) mass matrix, or NumPyro's structured form,
            a list of site-name tuples with a dense block each (e.g. ``[("w",), ("x", "y")]``;
            the other sites diagonal). With a model, ``adapt_state.inverse_mass_matrix`` is
            NumPyro's dict of blocks, as in ``numpyro.infer.HMC``.
        target_accept_prob: target of dual averaging.
        find_heuristic_step_size: NumPyro's doubling/halving search of a step size whose single
            leapfrog step has acceptance about 0.8, at the start of each adaptation window.
        regularize_mass_matrix: shrink the estimated mass matrix as Stan does.
        init_strategy: NumPyro per-site initialisation (``init_to_uniform``, ``init_to_median``,
            ...).
        forward_mode_differentiation: gradients of the potential by forward-mode autodiff
            (``jax.jacfwd``), for models with control flow reverse mode cannot differentiate
            (``lax.while_loop``); as NumPyro's HMC option.
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        kernel_factory: KernelFactory | None = None,
        *,
        step_size: float = 1.0,
        inverse_mass_matrix: Array | None = None,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        dense_mass: bool = False,
        target_accept_prob: float = 0.8,
        find_heuristic_step_size: bool = False,
        regularize_mass_matrix: bool = True,
        init_strategy: Callable = init_to_uniform,
        forward_mode_differentiation: bool = False,
    ):
        if (model is None) == (potential_fn is None):
            raise ValueError("Pass exactly one of `model` or `potential_fn`.")
        if kernel_factory is not None and not callable(kernel_factory):
            raise TypeError(
                "kernel_factory must be callable as kernel_factory(logdensity_fn, step_size, "
                f"inverse_mass_matrix) -> SamplingAlgorithm, got {type(kernel_factory).__name__}."
            )
        _check_dense_mass(dense_mass)
        if concrete(step_size) and not np.all(np.asarray(step_size) > 0):
            raise ValueError(f"step_size must be positive, got {step_size!r}.")
        if concrete(target_accept_prob) and not 0.0 < float(target_accept_prob) < 1.0:
            raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}.")
        self._model = model
        self._potential_fn = potential_fn
        self._kernel_factory = kernel_factory
        self._step_size = step_size
        self._inverse_mass_matrix = inverse_mass_matrix
        self._adapt_step_size = adapt_step_size
        self._adapt_mass_matrix = adapt_mass_matrix
        self._dense_mass = dense_mass
        self._target_accept_prob = target_accept_prob
        self._find_heuristic_step_size = find_heuristic_step_size
        self._regularize_mass_matrix = regularize_mass_matrix
        self._init_strategy = init_strategy
        self._forward_mode = bool(forward_mode_differentiation)
        # set by init
        self._potential_fn_gen = None
        self._postprocess_fn = None
        self._num_warmup = 0
        self._wa_update = None
        self._sample_fn = None

    # ----------------------------------------------------------------- extension points
    def leapfrog_step_size_map(self) -> tuple[Callable, Callable]:
        """``(to_leapfrog, from_leapfrog)``: this kernel's step size to the leapfrog step
        $\\epsilon$ that NumPyro's heuristic search tunes, and back (identity here; MALA's
        $h$ has $\\epsilon = \\sqrt{2h}$)."""
        return identity, identity

    def make_algorithm(
        self, logdensity_fn: Callable, step_size: Array, inverse_mass_matrix: Array
    ) -> SamplingAlgorithm:
        """Build the inner kernel for the current adapted parameters (called inside ``jit``).

        Args:
            logdensity_fn: $\\log p(z) = -U(z)$ on the unconstrained position pytree.
            step_size: current step size (scalar array).
            inverse_mass_matrix: current inverse mass matrix, ``(d,)`` or ``(d, d)``.

        Returns:
            A ``blackjax.base.SamplingAlgorithm``.
        """
        if self._kernel_factory is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no kernel_factory: pass one, or override "
                "make_algorithm(logdensity_fn, step_size, inverse_mass_matrix)."
            )
        return self._kernel_factory(logdensity_fn, step_size, inverse_mass_matrix)

    def _algorithm(
        self, z: Any, logdensity_fn: Callable, step_size: Array, inverse_mass_matrix: Array
    ) -> SamplingAlgorithm:
        """``make_algorithm``'s kernel, or the identity kernel when ``z`` has no entries (a model
        without continuous latent sites: only deterministic or enumerated sites, or none)."""
        if ravel_pytree(z)[0].size == 0:
            return _static_algorithm(logdensity_fn)
        if self._forward_mode:
            logdensity_fn = forward_mode_gradient(logdensity_fn)
        imm = flat_inverse_mass_matrix(inverse_mass_matrix, z)
        return self.make_algorithm(logdensity_fn, step_size, imm)

    def accept_prob(self, info: Any) -> Array:
        """Acceptance statistic of one transition, the input of dual averaging.

        Args:
            info: the inner kernel's info.

        Returns:
            Scalar in [0, 1] (NaN is mapped to 0).
        """
        a = jnp.asarray(info.acceptance_rate)
        return jnp.where(jnp.isnan(a), 0.0, a)

    def num_steps(self, info: Any) -> Array:
        """Gradient evaluations of one transition (reported as the ``num_steps`` field).

        Args:
            info: the inner kernel's info.

        Returns:
            Integer scalar: ``info.num_grad_evals`` or ``info.num_integration_steps`` when
            present, else 1.
        """
        for name in ("num_grad_evals", "num_integration_steps"):
            if hasattr(info, name):
                return jnp.asarray(getattr(info, name), jnp.result_type(int))
        return jnp.asarray(1, jnp.result_type(int))

    def diverging(self, info: Any) -> Array:
        """Whether one transition diverged.

        Args:
            info: the inner kernel's info.

        Returns:
            Boolean scalar: ``info.is_divergent`` when present, else False.
        """
        return jnp.asarray(getattr(info, "is_divergent", False), bool)

    # ----------------------------------------------------------------- MCMCKernel API
    @property
    def model(self) -> Callable | None:
        """The NumPyro model (None for a ``potential_fn`` kernel); arviz reads it."""
        return self._model

    @property
    def sample_field(self) -> str:
        """Name of the state field holding the position: ``"z"``."""
        return "z"

    @property
    def default_fields(self) -> tuple[str, ...]:
        """Fields collected by default: ``("z", "diverging")`` (as NumPyro's HMC)."""
        return ("z", "diverging")

    def get_diagnostics_str(self, state: BlackJAXState) -> str:
        """Progress-bar text: gradient evaluations, step size, mean acceptance.

        Args:
            state: current state.

        Returns:
            The text.
        """
        step_size, accept = state.adapt_state.step_size, state.mean_accept_prob
        return f"{state.num_steps} steps of size {step_size:.2e}. acc. prob={accept:.2f}"

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict) -> Callable:
        """Map unconstrained samples to constrained sites and deterministic sites.

        Args:
            model_args: model positional arguments.
            model_kwargs: model keyword arguments.

        Returns:
            ``z -> dict`` (identity for a ``potential_fn`` kernel).
        """
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(*model_args, **model_kwargs)

    def get_potential_fn(
        self, model_args: tuple = (), model_kwargs: dict | None = None
    ) -> Callable:
        """Potential $U(z)$ for the given model arguments (after :meth:`init`).

        Args:
            model_args: model positional arguments.
            model_kwargs: model keyword arguments.

        Returns:
            ``z -> scalar``.
        """
        if self._potential_fn_gen is None:
            if self._potential_fn is not None:
                return self._potential_fn
            raise RuntimeError("Call init (or MCMC.run) before get_potential_fn.")
        return self._potential_fn_gen(*model_args, **(model_kwargs or {}))

    def _init_model(self, rng_key, model_args, model_kwargs, init_params):
        if self._model is None:
            return init_params
        new_params, potential_fn_gen, postprocess_fn, _ = initialize_model(
            rng_key,
            self._model,
            dynamic_args=True,
            init_strategy=self._init_strategy,
            forward_mode_differentiation=self._forward_mode,
            model_args=model_args,
            model_kwargs=model_kwargs,
        )
        self._potential_fn_gen = potential_fn_gen
        self._postprocess_fn = postprocess_fn
        if init_params is None:
            return new_params
        _check_init_params(init_params, new_params.z, vectorized=not is_prng_key(rng_key))
        return init_params

    def init(
        self,
        rng_key: PRNGKey,
        num_warmup: int,
        init_params: Any = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
    ) -> BlackJAXState:
        """Initial state (a batch of states when ``rng_key`` is a batch: vectorized chains).

        Args:
            rng_key: PRNG key, or keys of shape ``(num_chains,)`` for vectorized chains.
            num_warmup: number of warmup (adaptation) steps.
            init_params: initial unconstrained position (required with ``potential_fn``).
            model_args: model positional arguments.
            model_kwargs: model keyword arguments.

        Returns:
            The initial :class:`BlackJAXState`.
        """
        model_kwargs = {} if model_kwargs is None else model_kwargs
        vectorized = not is_prng_key(rng_key)
        if vectorized:
            rng_key, key_model = jnp.swapaxes(jax.vmap(random.split)(rng_key), 0, 1)
        else:
            rng_key, key_model = random.split(rng_key)
        init_params = self._init_model(key_model, model_args, model_kwargs, init_params)
        if init_params is None:
            raise ValueError("With `potential_fn`, pass `init_params` to MCMC.run.")
        self._num_warmup = int(num_warmup)
        pe_fn = self.get_potential_fn(model_args, model_kwargs)

        find_ss = None
        if self._find_heuristic_step_size:
            to_leapfrog, from_leapfrog = self.leapfrog_step_size_map()
            # NumPyro's search differentiates the potential in reverse mode
            search_pe_fn = forward_mode_gradient(pe_fn) if self._forward_mode else pe_fn

            def find_ss(step_size, inverse_mass_matrix, z_info, key):
                eps = find_reasonable_step_size(
                    search_pe_fn,
                    euclidean_kinetic_energy,
                    momentum_generator,
                    to_leapfrog(step_size),
                    inverse_mass_matrix,
                    IntegratorState(z_info[0], None, None, None),
                    key,
                )
                return from_leapfrog(eps)

        wa_init, self._wa_update = warmup_adapter(
            num_warmup,
            find_reasonable_step_size=find_ss,
            adapt_step_size=self._adapt_step_size,
            adapt_mass_matrix=self._adapt_mass_matrix,
            dense_mass=self._structured_dense_mass(init_params),
            target_accept_prob=self._target_accept_prob,
            regularize_mass_matrix=self._regularize_mass_matrix,
        )

        def init_one(params, key):
            z = params.z if isinstance(params, ParamInfo) else params
            z = jax.tree.map(jnp.asarray, z)
            self._check_mass_matrix(z)
            key, key_wa, key_init, key_info = random.split(key, 4)
            step_size = jnp.asarray(self._step_size, jnp.result_type(float))
            adapt_state = wa_init(
                (z, None, None, None),
                key_wa,
                step_size,
                inverse_mass_matrix=self._inverse_mass_matrix,
            )
            algorithm = self._algorithm(
                z, lambda x: -pe_fn(x), adapt_state.step_size, adapt_state.inverse_mass_matrix
            )
            kernel_state = algorithm.init(z, key_init)
            info_shape = jax.eval_shape(algorithm.step, key_info, kernel_state)[1]
            info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)
            zero = jnp.zeros((), jnp.result_type(float))
            return BlackJAXState(
                i=jnp.array(0, jnp.result_type(int)),
                z=z,
                potential_energy=-jnp.asarray(kernel_state.logdensity),
                num_steps=jnp.array(0, jnp.result_type(int)),
                accept_prob=zero,
                mean_accept_prob=zero,
                diverging=jnp.array(False),
                adapt_state=adapt_state,
                kernel_state=kernel_state,
                info=info,
                rng_key=key,
            )

        if vectorized:
            state = jax.vmap(init_one)(init_params, rng_key)
            self._sample_fn = jax.vmap(self._sample_one, in_axes=(0, None, None))
        else:
            state = init_one(init_params, rng_key)
            self._sample_fn = self._sample_one
        self._check_initial_potential(state.potential_energy)
        return state

    def _structured_dense_mass(self, init_params) -> bool | list:
        """NumPyro's convention: with a model, ``dense_mass`` becomes a list of site tuples
        (``True``: one dense block over all sites, sorted; ``False``: none), so the adapted
        inverse mass matrix is a dict of blocks; with ``potential_fn`` it stays as given."""
        if self._model is None or not isinstance(self._dense_mass, bool):
            return self._dense_mass
        z = init_params.z if isinstance(init_params, ParamInfo) else init_params
        return [tuple(sorted(z))] if self._dense_mass else []

    def _check_mass_matrix(self, z):
        imm = self._inverse_mass_matrix
        if imm is None:
            return
        if isinstance(imm, dict):
            _check_mass_blocks(imm, z)
            return
        d = ravel_pytree(z)[0].size
        if jnp.shape(imm) not in ((d,), (d, d)):
            raise ValueError(
                f"inverse_mass_matrix has shape {jnp.shape(imm)} but the unconstrained position "
                f"has {d} entries; pass shape ({d},) (diagonal) or ({d}, {d}) (dense)."
            )

    @staticmethod
    def _check_initial_potential(pe):
        if isinstance(pe, jax.core.Tracer):
            return
        if not np.all(np.isfinite(np.asarray(pe))):
            raise ValueError(
                f"The potential energy at the initial position is {np.asarray(pe)} (not finite). "
                "Pass init_params inside the support, or another init_strategy."
            )

    def _sample_one(self, state: BlackJAXState, model_args, model_kwargs) -> BlackJAXState:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        pe_fn = self.get_potential_fn(model_args, model_kwargs)
        rng_key, key_step = random.split(state.rng_key)
        adapt_state = state.adapt_state
        algorithm = self._algorithm(
            state.z, lambda x: -pe_fn(x), adapt_state.step_size, adapt_state.inverse_mass_matrix
        )
        kernel_state, info = algorithm.step(key_step, state.kernel_state)
        accept_prob = self.accept_prob(info)
        z = kernel_state.position

        adapt_state = jax.lax.cond(
            state.i < self._num_warmup,
            lambda a: self._wa_update(state.i, accept_prob, (z, None, None, None), a),
            lambda a: a,
            adapt_state,
        )
        itr = state.i + 1
        n = jnp.where(state.i < self._num_warmup, itr, itr - self._num_warmup)
        mean_accept_prob = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / n
        return BlackJAXState(
            i=itr,
            z=z,
            potential_energy=-jnp.asarray(kernel_state.logdensity),
            num_steps=self.num_steps(info),
            accept_prob=accept_prob,
            mean_accept_prob=mean_accept_prob,
            diverging=self.diverging(info),
            adapt_state=adapt_state,
            kernel_state=kernel_state,
            info=info,
            rng_key=rng_key,
        )

    def sample(self, state: BlackJAXState, model_args: tuple, model_kwargs: dict) -> BlackJAXState:
        """One transition of the inner kernel, then one warmup update while ``i < num_warmup``.

        Args:
            state: current state.
            model_args: model positional arguments.
            model_kwargs: model keyword arguments.

        Returns:
            The next state.
        """
        if self._sample_fn is None:
            raise RuntimeError("Call init (or MCMC.run) before sample.")
        return self._sample_fn(state, model_args, model_kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sample_fn"] = None
        state["_wa_update"] = None
        return state


def concrete(x: Any) -> bool:
    """Whether ``x`` has a value now: not a tracer (a kernel built inside ``jit`` with traced
    hyperparameters, as NumPyro's HMC and NUTS allow). Range checks apply to concrete values."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def _check_dense_mass(dense_mass: Any) -> None:
    ok = isinstance(dense_mass, bool) or (
        isinstance(dense_mass, list)
        and all(
            isinstance(t, tuple) and t and all(isinstance(n, str) for n in t) for t in dense_mass
        )
    )
    if not ok:
        raise TypeError(
            "dense_mass must be True, False or a list of tuples of site names, e.g. "
            f'[("w",), ("x", "y")] (NumPyro\'s structured mass), got {dense_mass!r}.'
        )


def _site_slices(z: dict) -> dict[str, np.ndarray]:
    """Indices of each site's entries in ``ravel_pytree(z)`` (sites in sorted order)."""
    out, start = {}, 0
    for name in sorted(z):
        n = int(np.prod(jnp.shape(z[name])))
        out[name] = np.arange(start, start + n)
        start += n
    return out


def _check_mass_blocks(imm: dict, z: Any) -> None:
    if not isinstance(z, dict):
        raise ValueError(
            "A dict inverse_mass_matrix {(site, ...): block} needs a position that is a dict of "
            f"sites; got a {type(z).__name__}. Pass a (d,) or (d, d) array instead."
        )
    slices = _site_slices(z)
    for key, block in imm.items():
        if not isinstance(key, tuple) or any(k not in slices for k in key):
            raise ValueError(
                f"inverse_mass_matrix key {key!r} must be a tuple of latent site names among "
                f"{sorted(slices)}."
            )
        n = sum(slices[k].size for k in key)
        if jnp.shape(block) not in ((n,), (n, n)):
            raise ValueError(
                f"inverse_mass_matrix[{key!r}] has shape {jnp.shape(block)}; the sites {key} have "
                f"{n} unconstrained entries: pass shape ({n},) (diagonal) or ({n}, {n}) (dense)."
            )


def flat_inverse_mass_matrix(imm: Any, z: Any) -> Array:
    """NumPyro's dict of blocks ``{(site, ...): (n,) | (n, n)}`` as one matrix in the order of
    ``ravel_pytree(z)``: ``(d,)`` when every block is diagonal, else the block-diagonal
    ``(d, d)``; an array is returned as it is."""
    if not isinstance(imm, dict):
        return imm
    slices = _site_slices(z)
    idx = {key: np.concatenate([slices[k] for k in key]) for key in imm}
    d = sum(v.size for v in slices.values())
    dtype = jnp.result_type(*imm.values())
    if all(jnp.ndim(b) == 1 for b in imm.values()):
        out = jnp.zeros(d, dtype)
        for key, block in imm.items():
            out = out.at[idx[key]].set(block)
        return out
    out = jnp.zeros((d, d), dtype)
    for key, block in imm.items():
        block = jnp.diag(block) if jnp.ndim(block) == 1 else block
        out = out.at[np.ix_(idx[key], idx[key])].set(block)
    return out


def forward_mode_gradient(logdensity_fn: Callable) -> Callable:
    """``logdensity_fn`` whose reverse-mode derivative is computed by forward mode
    (``jax.jacfwd``): BlackJAX kernels call ``jax.value_and_grad``, which then works for
    functions with ``lax.while_loop`` (differentiable in forward mode only)."""

    @jax.custom_vjp
    def f(x):
        return logdensity_fn(x)

    def fwd(x):
        return logdensity_fn(x), jax.jacfwd(logdensity_fn)(x)

    def bwd(grad, ct):
        return (jax.tree.map(lambda g: ct * g, grad),)

    f.defvjp(fwd, bwd)
    return f


class StaticState(NamedTuple):
    """State of the identity kernel: the position and its log density."""

    position: Any
    logdensity: Array


class StaticInfo(NamedTuple):
    """Info of the identity kernel: always accepted, never divergent, no gradient evaluations."""

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    num_integration_steps: Array


def _static_algorithm(logdensity_fn: Callable) -> SamplingAlgorithm:
    """The identity kernel $K(z, \\cdot) = \\delta_z$, exact for a point mass: with no continuous
    latent entries there is nothing to move (NumPyro's NUTS also returns such models' sites)."""

    def init(position, rng_key=None):
        del rng_key
        return StaticState(position, jnp.asarray(logdensity_fn(position)))

    def step(rng_key, state):
        del rng_key
        info = StaticInfo(
            jnp.ones((), jnp.result_type(float)),
            jnp.ones((), bool),
            jnp.zeros((), bool),
            jnp.zeros((), jnp.result_type(int)),
        )
        return state, info

    return SamplingAlgorithm(init, step)


def _check_init_params(init_params: Any, expected: Any, vectorized: bool) -> None:
    """Raise a ValueError naming the site when ``init_params`` does not match the model.

    ``expected`` is the model's own initial unconstrained position (``ParamInfo.z``: a dict
    site -> array, with a leading chain axis for vectorized chains).
    """
    given = init_params.z if isinstance(init_params, ParamInfo) else init_params
    chains = ""
    if vectorized:
        n = jax.tree.leaves(expected)[0].shape[0] if jax.tree.leaves(expected) else 0
        chains = f", with a leading axis of {n} chains"
    if not isinstance(expected, dict):
        return
    if not isinstance(given, dict):
        raise ValueError(
            "init_params must be a dict {site name: unconstrained value} (or a ParamInfo) like "
            f"the model's latent sites {sorted(expected)}, got {type(given).__name__}."
        )
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        shapes = {k: tuple(jnp.shape(v)) for k, v in expected.items()}
        raise ValueError(
            "init_params must give every latent site of the model and nothing else"
            + (f"; missing {missing}" if missing else "")
            + (f"; not latent sites of the model {extra}" if extra else "")
            + f". Expected unconstrained shapes{chains}: {shapes}."
        )
    for name, want in expected.items():
        got, want = tuple(jnp.shape(given[name])), tuple(jnp.shape(want))
        if got != want:
            site = want[1:] if vectorized else want
            raise ValueError(
                f"init_params[{name!r}] has shape {got}; expected {want}: the site's "
                f"unconstrained shape {site}{chains} (values are in unconstrained space, as "
                "in numpyro.infer.HMC)."
            )
        dtype = jnp.result_type(given[name])
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise ValueError(f"init_params[{name!r}] has dtype {dtype}; expected real numbers.")
