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

**Total-variation bound.** The stationary distribution $t_\infty$ of the chain driven by $d$
satisfies a bound of the form $\|t_\infty - p\|_{TV} \le \sqrt{2\,(L(d) - L(d^*))}$ (see
``tv_bound``; $L(d^*) \ge 0$ is unknown, so the reported value uses the loss itself unless a lower
bound on $L(d^*)$ is supplied, and is clipped to 1).

**Exact path.** With the exact ratio supplied as ``log_ratio`` the chain is an exact MH chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import blackjax.base
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kernels.types import Array, ArrayLike, ArrayTree, PRNGKey

__all__ = [
    "IMHState",
    "MarkovIMHState",
    "IMHInfo",
    "DiscriminatorFit",
    "init",
    "build_kernel",
    "init_markov",
    "build_markov_kernel",
    "independent",
    "markov",
    "fit_discriminator",
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
            ``fit_discriminator``). Must return a scalar.

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
            ratio (exact, or learned with ``fit_discriminator(..., markov=True)``). Scalar.

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


class DiscriminatorFit(NamedTuple):
    """Result of ``fit_discriminator``.

    Attributes:
        log_ratio: the learned log ratio, ``x -> r(x)`` (independent) or
            ``(x, x') -> r(x, x')`` (Markov); plug into ``independent`` / ``markov``.
        loss_history: training loss per step, shape (num_steps,).
        loss: the discriminator loss L(d) on a fresh evaluation batch.
        tv_bound: the total-variation bound computed from ``loss`` (see ``tv_bound``).
    """

    log_ratio: Callable
    loss_history: Array
    loss: Array
    tv_bound: Array


class _MLP(nnx.Module):
    def __init__(self, din: int, hidden: Sequence[int], rngs: nnx.Rngs):
        sizes = [din, *hidden]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.out = nnx.Linear(sizes[-1], 1, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.silu(layer(x))
        return self.out(x)[..., 0]


def tv_bound(loss: ArrayLike, loss_optimal: ArrayLike = 0.0) -> Array:
    r"""Total-variation bound from the discriminator loss.

    $\min\{1, \sqrt{2\,(L(d) - L_\star)}\}$ with $L_\star \le L(d^*)$ a lower bound on the
    optimal loss (default 0, always valid since the cross-entropy loss is non-negative).

    Args:
        loss: the discriminator loss L(d).
        loss_optimal: a lower bound on L(d*).

    Returns:
        The bound, a scalar in [0, 1].
    """
    excess = jnp.maximum(jnp.asarray(loss) - loss_optimal, 0.0)
    return jnp.minimum(1.0, jnp.sqrt(2.0 * excess))


def _check_target(target_samples) -> np.ndarray:
    x = np.asarray(target_samples)
    if x.ndim != 2:
        raise ValueError(
            f"target_samples must have shape (num_samples, dim), got {x.shape}; reshape "
            "1-d samples with x[:, None] and flatten structured samples."
        )
    if x.shape[0] < 2:
        raise ValueError(f"target_samples needs at least 2 samples, got {x.shape[0]}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"target_samples contains {int((~np.isfinite(x)).sum())} non-finite values; "
            "drop or impute them before fitting."
        )
    return x


def fit_discriminator(
    key: PRNGKey,
    target_samples: ArrayLike,
    sample_proposal: Callable,
    *,
    markov: bool = False,
    num_steps: int = 1000,
    batch_size: int = 256,
    hidden: Sequence[int] = (64, 64),
    learning_rate: float = 3e-3,
    loss_optimal: float = 0.0,
) -> DiscriminatorFit:
    """Train the discriminator of implicit MH (paper's loss) with optax, in one jitted scan.

    Args:
        key: PRNG key.
        target_samples: samples of p, shape (num_samples, dim).
        sample_proposal: ``key -> x`` (independent) or ``(key, x) -> x'`` (Markov), x of shape (dim,).
        markov: train the pair discriminator for a Markov proposal.
        num_steps: optimisation steps.
        batch_size: target (and proposal) samples per step.
        hidden: hidden layer widths of the MLP.
        learning_rate: Adam learning rate.
        loss_optimal: lower bound on the optimal loss L(d*) passed to ``tv_bound``.

    Returns:
        ``DiscriminatorFit(log_ratio, loss_history, loss, tv_bound)``.
    """
    x_target = _check_target(target_samples)
    n, dim = x_target.shape
    x_target = jnp.asarray(x_target)
    key_init, key_train, key_eval = jax.random.split(key, 3)
    if markov:
        probe = jax.eval_shape(sample_proposal, key_init, x_target[0])
    else:
        probe = jax.eval_shape(sample_proposal, key_init)
    if probe.shape != (dim,):
        raise ValueError(
            f"sample_proposal must return one point of shape ({dim},) like a target sample, "
            f"got {probe.shape}."
        )
    din = 2 * dim if markov else dim
    model = _MLP(din, hidden, rngs=nnx.Rngs(int(jax.random.randint(key_init, (), 0, 2**30))))
    graphdef, params = nnx.split(model)
    opt = optax.adam(learning_rate)

    def f(p, z):
        return nnx.merge(graphdef, p)(z)

    def batch_loss(p, key):
        k_idx, k_prop = jax.random.split(key)
        xs = x_target[jax.random.randint(k_idx, (batch_size,), 0, n)]
        keys = jax.random.split(k_prop, batch_size)
        if markov:
            xp = jax.vmap(sample_proposal)(keys, xs)
            fa = f(p, jnp.concatenate([xs, xp], -1))
            fb = f(p, jnp.concatenate([xp, xs], -1))
            logit_d = fa - fb  # logit d(x, x'); logit d(x', x) = -logit_d
            logit_d_swapped = -logit_d
            # -E[log d(x,x') + log(1 - d(x',x))]; both terms equal by construction.
            return -jnp.mean(jax.nn.log_sigmoid(logit_d)) - jnp.mean(
                jax.nn.log_sigmoid(-logit_d_swapped)
            )
        xq = jax.vmap(sample_proposal)(keys)
        return -jnp.mean(jax.nn.log_sigmoid(f(p, xs))) - jnp.mean(jax.nn.log_sigmoid(-f(p, xq)))

    @jax.jit
    def train(params, key):
        def body(carry, k):
            p, s = carry
            loss, g = jax.value_and_grad(batch_loss)(p, k)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (params, _), losses = jax.lax.scan(
            body, (params, opt.init(params)), jax.random.split(key, num_steps)
        )
        eval_loss = jnp.mean(
            jax.vmap(lambda k: batch_loss(params, k))(jax.random.split(key_eval, 8))
        )
        return params, losses, eval_loss

    params, losses, eval_loss = train(params, key_train)

    if markov:

        def log_ratio(x, xp):
            return f(params, jnp.concatenate([xp, x], -1)) - f(params, jnp.concatenate([x, xp], -1))
    else:

        def log_ratio(x):
            return f(params, x)

    return DiscriminatorFit(log_ratio, losses, eval_loss, tv_bound(eval_loss, loss_optimal))


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
