r"""Implicit Metropolis-Hastings: MH with a density ratio learned from samples.

Neklyudov, Egorov, Vetrov, "The Implicit Metropolis-Hastings Algorithm", NeurIPS 2019
(arXiv:1906.03644). The target $p$ is known only through samples and the proposal $q$ can be
sampled but not evaluated. A discriminator estimates the density ratio, and its output replaces
the unknown ratio in the MH acceptance test.

**Independent proposals** (the MH-GAN case), $x' \sim q(x')$. With
$r(x) = \log p(x) - \log q(x)$ (up to a constant), accept with
$\alpha(x, x') = \min\{1, \exp(r(x') - r(x))\}$. A classifier $d(x) = \sigma(f(x))$ trained with
$L(d) = -\mathbb{E}_{p}\log d(x) - \mathbb{E}_{q}\log(1 - d(x))$ has optimum
$d^* = p / (p + q)$, so $f^* = \log p/q$ and we use $r = f$.

**Markov proposals** $x' \sim q(x' \mid x)$. The acceptance needs the full MH ratio
$r(x, x') = \log \frac{p(x')\, q(x \mid x')}{p(x)\, q(x' \mid x)}$ and accepts with
$\min\{1, e^{r(x, x')}\}$. The discriminator acts on pairs,
$L(d) = -\mathbb{E}_{x\sim p,\,x'\sim q(\cdot\mid x)}[\log d(x, x') + \log(1 - d(x', x))]$, with
optimum $d^*(x, x') = \frac{p(x)q(x'\mid x)}{p(x)q(x'\mid x) + p(x')q(x\mid x')}$. We parametrise
$\operatorname{logit} d(x, x') = f(x, x') - f(x', x)$, so $d(x', x) = 1 - d(x, x')$ holds by
construction and the learned MH ratio is $r(x, x') = f(x', x) - f(x, x')$.

**Total-variation bound.** Write $a(x, x') = p(x)q(x' \mid x)$, $b(x, x') = a(x', x)$ and
$d(x, x') = \sigma(-r(x, x'))$ for the pair discriminator implied by any MH log ratio $r$
(independent case: $r(x, x') = r(x') - r(x)$), and the paper's pair loss
$L(d) = -\mathbb{E}_a[\log d(x, x') + \log(1 - d(x', x))]$, minimised by
$d^* = a / (a + b)$. If the learned kernel $\hat T$ has Dobrushin contraction coefficient $\rho$,
its stationary law $t_\infty$ satisfies

$$\|t_\infty - p\|_{TV} \le \frac{\|p\hat T - pT\|_{TV}}{1 - \rho}
\le \frac{2\sqrt{L(d) - L(d^*)}}{1 - \rho}$$

(perturbation of the exact kernel $T$, then $a|\hat\alpha - \alpha| \le 2(a + b)|d - d^*|$
pointwise, then Pinsker's inequality on $L(d) - L(d^*) = \int (a + b)\,
\mathrm{KL}(\mathrm{Bern}(d^*)\,\|\,\mathrm{Bern}(d))$): the discriminator's excess loss bounds
the error of the chain, as in the paper's theorem, here with explicit constants. For independent
proposals $\rho \le 1 - 1/M$ with $M = \sup_x t_\infty(x)/q(x) = \sup e^{r} / \mathbb{E}_q e^{r}$
(Doeblin), estimated from samples by ``independent_contraction``. $L(d^*)$ is unknown when $p$ and
$q$ are: ``tv_bound`` takes a lower bound $L_\star \le L(d^*)$ (default $0$, always valid but
then the bound is usually 1); with densities at hand (a synthetic check) $L(d^*)$ follows from
``pair_loss_terms`` with the exact ratio.

**Exact path.** With the exact ratio supplied as ``log_ratio`` the chain is an exact MH chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import blackjax.base
import jax
import jax.numpy as jnp

from kernels.types import Array, ArrayLike, ArrayTree, PRNGKey

__all__ = [
    "IMHState",
    "MarkovIMHState",
    "IMHInfo",
    "init",
    "build_kernel",
    "init_markov",
    "build_markov_kernel",
    "independent",
    "markov",
    "pair_loss_terms",
    "independent_contraction",
    "tv_bound",
    "energy_distance",
]


class IMHState(NamedTuple):
    """State of the independent implicit MH chain.

    Attributes:
        position: current sample x.
        log_ratio: cached r(x) = log p(x)/q(x) (up to a constant), a scalar.
    """

    position: ArrayTree
    log_ratio: Array


class MarkovIMHState(NamedTuple):
    """State of the Markov implicit MH chain.

    Attributes:
        position: current sample x.
    """

    position: ArrayTree


class IMHInfo(NamedTuple):
    """Information about one transition.

    Attributes:
        acceptance_rate: min(1, exp(log acceptance ratio)); 0 when the ratio is NaN.
        is_accepted: whether the proposal was accepted.
        proposal: the proposed position x'.
    """

    acceptance_rate: Array
    is_accepted: Array
    proposal: ArrayTree


def _accept(key: PRNGKey, log_alpha: Array):
    """MH test; a NaN log ratio is rejected (``log u < NaN`` is False)."""
    log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
    acceptance_rate = jnp.exp(jnp.minimum(log_alpha, 0.0))
    log_u = jnp.log(jax.random.uniform(key, dtype=jnp.result_type(float)))
    return log_u < log_alpha, acceptance_rate


def _select(flag, a, b):
    return jax.tree.map(lambda u, v: jnp.where(flag, u, v), a, b)


def init(position: ArrayTree, log_ratio_fn: Callable[[ArrayTree], Array]) -> IMHState:
    """Initial state of the independent chain.

    Args:
        position: starting point x.
        log_ratio_fn: r(x) = log p(x)/q(x) up to a constant, scalar.

    Returns:
        The ``IMHState``.
    """
    return IMHState(position, jnp.asarray(log_ratio_fn(position)))


def build_kernel() -> Callable:
    """Build the independent implicit MH transition.

    Returns:
        ``kernel(key, state, sample_proposal, log_ratio_fn) -> (IMHState, IMHInfo)``: draw
        x' ~ q, accept with min(1, exp(r(x') - r(x))).
    """

    def kernel(key, state: IMHState, sample_proposal, log_ratio_fn):
        key_prop, key_acc = jax.random.split(key)
        proposal = sample_proposal(key_prop)
        r_new = jnp.asarray(log_ratio_fn(proposal))
        log_alpha = r_new - state.log_ratio
        is_accepted, acceptance_rate = _accept(key_acc, log_alpha)
        new_state = _select(is_accepted, IMHState(proposal, r_new), state)
        return new_state, IMHInfo(acceptance_rate, is_accepted, proposal)

    return kernel


def init_markov(position: ArrayTree) -> MarkovIMHState:
    """Initial state of the Markov chain.

    Args:
        position: starting point x.

    Returns:
        The ``MarkovIMHState``.
    """
    return MarkovIMHState(position)


def build_markov_kernel() -> Callable:
    """Build the Markov implicit MH transition.

    Returns:
        ``kernel(key, state, sample_proposal, log_ratio_fn) -> (MarkovIMHState, IMHInfo)``:
        draw x' ~ q(.|x), accept with min(1, exp(r(x, x'))) where
        r(x, x') = log p(x') q(x|x') - log p(x) q(x'|x).
    """

    def kernel(key, state: MarkovIMHState, sample_proposal, log_ratio_fn):
        key_prop, key_acc = jax.random.split(key)
        proposal = sample_proposal(key_prop, state.position)
        log_alpha = jnp.asarray(log_ratio_fn(state.position, proposal))
        is_accepted, acceptance_rate = _accept(key_acc, log_alpha)
        new_state = _select(is_accepted, MarkovIMHState(proposal), state)
        return new_state, IMHInfo(acceptance_rate, is_accepted, proposal)

    return kernel


def _check_scalar(fn, *args, name: str):
    try:
        out = jax.eval_shape(fn, *args)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{name} failed on the given position: {err}") from err
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"{name} must return a scalar log ratio per point, got shape "
            f"{getattr(out, 'shape', type(out))}; sum or index your output to a scalar "
            "(vectorise with jax.vmap, not inside log_ratio)."
        )


def independent(
    sample_proposal: Callable[[PRNGKey], ArrayTree],
    log_ratio: Callable[[ArrayTree], Array],
) -> blackjax.base.SamplingAlgorithm:
    """Independent implicit MH (MH-GAN case), BlackJAX-style.

    Args:
        sample_proposal: ``key -> x`` draws x ~ q (no density needed).
        log_ratio: ``x -> log p(x)/q(x)`` up to an additive constant (exact, or learned with
            :func:`ppl.discriminator.fit_discriminator`). Must return a scalar.

    Returns:
        ``SamplingAlgorithm`` with ``init(position)`` and ``step(key, state)``; vmap both
        for parallel chains.
    """
    kernel = build_kernel()

    def init_fn(position, rng_key=None):
        del rng_key
        _check_scalar(log_ratio, position, name="log_ratio")
        return init(position, log_ratio)

    def step_fn(key, state):
        return kernel(key, state, sample_proposal, log_ratio)

    return blackjax.base.SamplingAlgorithm(init_fn, step_fn)


def markov(
    sample_proposal: Callable[[PRNGKey, ArrayTree], ArrayTree],
    log_ratio: Callable[[ArrayTree, ArrayTree], Array],
) -> blackjax.base.SamplingAlgorithm:
    """Markov-proposal implicit MH, BlackJAX-style.

    Args:
        sample_proposal: ``(key, x) -> x'`` draws x' ~ q(x'|x).
        log_ratio: ``(x, x') -> log [p(x') q(x|x')] - log [p(x) q(x'|x)]``, the full MH log
            ratio (exact, or learned with :func:`ppl.discriminator.fit_discriminator` with ``markov=True``). Scalar.

    Returns:
        ``SamplingAlgorithm`` with ``init(position)`` and ``step(key, state)``.
    """
    kernel = build_markov_kernel()

    def init_fn(position, rng_key=None):
        del rng_key
        _check_scalar(log_ratio, position, position, name="log_ratio")
        return init_markov(position)

    def step_fn(key, state):
        return kernel(key, state, sample_proposal, log_ratio)

    return blackjax.base.SamplingAlgorithm(init_fn, step_fn)


# ----------------------------------------------------------------------------- discriminator


def pair_loss_terms(
    log_ratio: Callable, x: ArrayLike, x_proposed: ArrayLike, *, markov: bool = False
) -> Array:
    r"""Per-pair terms of the paper's pair loss for an MH log ratio.

    With $d(x, x') = \sigma(-r(x, x'))$ the term is
    $-\log d(x, x') - \log(1 - d(x', x)) = \mathrm{softplus}(r(x, x')) + \mathrm{softplus}(-r(x', x))$;
    its mean over $x \sim p$, $x' \sim q(\cdot \mid x)$ is $L(d)$, minimised by the exact ratio.
    Pass the exact ratio to get $L(d^*)$ (a synthetic check with known densities); the mean
    difference of two calls on the same pairs estimates the excess loss with a small variance.

    Args:
        log_ratio: ``x -> r(x)`` (independent; $r(x, x') = r(x') - r(x)$) or
            ``(x, x') -> r(x, x')`` (Markov).
        x: target samples, shape (n, dim).
        x_proposed: proposals, shape (n, dim): independent draws of $q$, or
            $x'_i \sim q(\cdot \mid x_i)$ for Markov proposals.
        markov: whether ``log_ratio`` takes pairs.

    Returns:
        The n terms, shape (n,).
    """
    x, xp = jnp.asarray(x), jnp.asarray(x_proposed)
    if markov:
        r = jax.vmap(log_ratio)(x, xp)
        r_reverse = jax.vmap(log_ratio)(xp, x)
    else:
        r = jax.vmap(log_ratio)(xp) - jax.vmap(log_ratio)(x)
        r_reverse = -r
    return jax.nn.softplus(r) + jax.nn.softplus(-r_reverse)


def independent_contraction(
    log_ratio: Callable, proposal_samples: ArrayLike, points: ArrayLike | None = None
) -> Array:
    r"""Estimated Dobrushin coefficient of the independent chain with log ratio $r$.

    The chain is exact MH for $t_\infty \propto q e^{r}$ with proposal $q$, so its kernel is at
    least $t_\infty / M$ with $M = \sup e^{r} / \mathbb{E}_q e^{r}$ (Doeblin) and
    $\rho \le 1 - 1/M$. $\mathbb{E}_q e^{r}$ is the mean over ``proposal_samples`` and the
    supremum the maximum over them and ``points`` (e.g. the target samples): an estimate, not a
    guarantee, of the supremum.

    Args:
        log_ratio: ``x -> r(x)``.
        proposal_samples: draws of $q$, shape (n, dim).
        points: further points of the support where $r$ may peak, shape (m, dim).

    Returns:
        $1 - 1/\hat M$, a scalar in $[0, 1)$.
    """
    r_q = jax.vmap(log_ratio)(jnp.asarray(proposal_samples))
    r_max = jnp.max(r_q)
    if points is not None:
        r_max = jnp.maximum(r_max, jnp.max(jax.vmap(log_ratio)(jnp.asarray(points))))
    log_mean = jax.scipy.special.logsumexp(r_q) - jnp.log(r_q.shape[0])
    return 1.0 - jnp.exp(log_mean - r_max)


def tv_bound(loss: ArrayLike, loss_optimal: ArrayLike = 0.0, contraction: ArrayLike = 0.0) -> Array:
    r"""Total-variation bound on the chain's stationary law from the discriminator's pair loss.

    $\|t_\infty - p\|_{TV} \le \min\{1, 2\sqrt{L(d) - L_\star} / (1 - \rho)\}$ with
    $L_\star \le L(d^*)$ a lower bound on the optimal pair loss and $\rho$ the chain's
    contraction coefficient (module docstring). $L_\star = 0$ is always valid but usually leaves
    the bound at 1; $\rho = 1$ (no contraction known) gives 1.

    Args:
        loss: the pair loss $L(d)$ (``pair_loss_terms`` mean), or an upper confidence value.
        loss_optimal: $L_\star$, a lower bound on $L(d^*)$.
        contraction: $\rho \in [0, 1]$.

    Returns:
        The bound, a scalar in [0, 1].
    """
    excess = jnp.maximum(jnp.asarray(loss) - loss_optimal, 0.0)
    gap = 1.0 - jnp.asarray(contraction)
    bound = jnp.where(gap > 0, 2.0 * jnp.sqrt(excess) / jnp.where(gap > 0, gap, 1.0), 1.0)
    return jnp.minimum(1.0, bound)


def energy_distance(x: ArrayLike, y: ArrayLike) -> Array:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| between two sample sets (V-statistic).

    Args:
        x: samples, shape (n, dim).
        y: samples, shape (m, dim).

    Returns:
        The energy distance, a scalar.
    """
    x, y = jnp.atleast_2d(jnp.asarray(x)), jnp.atleast_2d(jnp.asarray(y))

    def md(a, b):
        return jnp.mean(jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1) + 1e-30))

    return 2 * md(x, y) - md(x, x) - md(y, y)


_MOVED = {"fit_discriminator", "DiscriminatorFit"}


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(
            f"kernels.implicit_mh.{name} moved to ppl.discriminator.{name} (it needs flax and "
            "optax; kernels depends on jax and blackjax only): use "
            f"`from ppl.discriminator import {name}`."
        )
    raise AttributeError(f"module 'kernels.implicit_mh' has no attribute {name!r}")
