r"""Training the discriminator of implicit MH (:mod:`kernels.implicit_mh`) with flax and optax.

The kernels in :mod:`kernels.implicit_mh` take any log ratio $r$; this module learns one from
target samples and proposal draws. A classifier $d = \sigma(f)$ minimising the logistic loss
$-\mathbb{E}_p \log d - \mathbb{E}_q \log(1 - d)$ has $f^* = \log p / q$ (independent
proposals); for Markov proposals the pair discriminator $\operatorname{logit} d(x, x') =
f(x, x') - f(x', x)$ gives the MH ratio $r(x, x') = f(x', x) - f(x, x')$. The fit reports the
total-variation bound of :func:`kernels.implicit_mh.tv_bound` on held-out pairs.

It lives in ``ppl`` because it needs flax and optax; ``kernels`` depends on jax and blackjax only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kernels.implicit_mh import independent_contraction, pair_loss_terms, tv_bound
from kernels.types import Array, ArrayLike, PRNGKey

__all__ = ["DiscriminatorFit", "fit_discriminator"]


class DiscriminatorFit(NamedTuple):
    """Result of ``fit_discriminator``.

    Attributes:
        log_ratio: the learned log ratio, ``x -> r(x)`` (independent) or
            ``(x, x') -> r(x, x')`` (Markov); plug into ``independent`` / ``markov``.
        loss_history: training loss per step, shape (num_steps,).
        loss: the training objective on held-out target samples and fresh proposals.
        pair_loss: the paper's pair loss $L(d)$ of the learned ratio on held-out pairs
            (``pair_loss_terms``); equals ``loss`` in expectation for Markov proposals.
        pair_loss_se: Monte Carlo standard error of ``pair_loss``.
        excess_loss: the upper confidence value (estimate + 2 standard errors) of
            $L(d) - L_\\star$ that enters the bound: $L_\\star$ = ``loss_optimal``, or
            $L(d^*)$ estimated on the same pairs when ``exact_log_ratio`` is given.
        contraction: the contraction coefficient $\\rho$ used in the bound (estimated by
            ``independent_contraction`` for independent proposals unless given).
        tv_bound: ``tv_bound(excess_loss, 0, contraction)``, the total-variation bound on the
            chain's stationary law.
    """

    log_ratio: Callable
    loss_history: Array
    loss: Array
    pair_loss: Array
    pair_loss_se: Array
    excess_loss: Array
    contraction: Array
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
    holdout: float = 0.2,
    num_eval: int = 65536,
    loss_optimal: float = 0.0,
    contraction: float | None = None,
    exact_log_ratio: Callable | None = None,
) -> DiscriminatorFit:
    """Train the discriminator of implicit MH with optax in one jitted scan, report its TV bound.

    Independent proposals: $d(x) = \\sigma(f(x))$ trained with
    $-\\mathbb{E}_p\\log d - \\mathbb{E}_q\\log(1 - d)$, log ratio $r = f$. Markov proposals:
    the pair loss with $\\operatorname{logit} d(x, x') = f(x, x') - f(x', x)$. A fraction
    ``holdout`` of the target samples is kept out of training; the reported losses, the bound
    and the contraction estimate use them and fresh proposals.

    Args:
        key: PRNG key.
        target_samples: samples of p, shape (num_samples, dim).
        sample_proposal: ``key -> x`` (independent) or ``(key, x) -> x'`` (Markov), x of shape (dim,).
        markov: train the pair discriminator for a Markov proposal.
        num_steps: optimisation steps.
        batch_size: target (and proposal) samples per step.
        hidden: hidden layer widths of the MLP.
        learning_rate: Adam learning rate.
        holdout: fraction of the target samples held out for evaluation (0: evaluate on the
            training samples, optimistic).
        num_eval: evaluation pairs.
        loss_optimal: lower bound $L_\\star$ on the optimal pair loss, passed to ``tv_bound``.
        contraction: contraction coefficient $\\rho$ for ``tv_bound``; by default estimated by
            ``independent_contraction`` for independent proposals and 1 (unknown: bound 1)
            for Markov proposals.
        exact_log_ratio: for synthetic checks where $p$ and $q$ are known: the exact log
            ratio (same signature as the learned one). The excess loss $L(d) - L(d^*)$ is then
            estimated on the same pairs (a small variance) instead of ``loss_optimal``.

    Returns:
        ``DiscriminatorFit(log_ratio, loss_history, loss, pair_loss, pair_loss_se,
        excess_loss, contraction, tv_bound)``.
    """
    x_all = _check_target(target_samples)
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}.")
    if contraction is not None and not 0.0 <= float(contraction) <= 1.0:
        raise ValueError(f"contraction must be in [0, 1], got {contraction}.")
    key_split, key_init, key_train, key_eval = jax.random.split(key, 4)
    n_hold = int(round(holdout * x_all.shape[0]))
    if holdout > 0 and not 1 <= n_hold <= x_all.shape[0] - 2:
        raise ValueError(
            f"holdout={holdout} of {x_all.shape[0]} target samples leaves {n_hold} for "
            "evaluation; pass more samples or holdout=0."
        )
    perm = np.asarray(jax.random.permutation(key_split, x_all.shape[0]))
    x_target = jnp.asarray(x_all[perm[n_hold:]])
    x_eval = jnp.asarray(x_all[perm[:n_hold]]) if n_hold else x_target
    n, dim = x_target.shape
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
    schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
    opt = optax.adam(schedule)

    def f(p, z):
        return nnx.merge(graphdef, p)(z)

    def objective(p, xs, keys):
        if markov:
            xp = jax.vmap(sample_proposal)(keys, xs)
            logit_d = f(p, jnp.concatenate([xs, xp], -1)) - f(p, jnp.concatenate([xp, xs], -1))
            # -E[log d(x, x') + log(1 - d(x', x))]; 1 - d(x', x) = d(x, x') by construction.
            return -2.0 * jnp.mean(jax.nn.log_sigmoid(logit_d))
        xq = jax.vmap(sample_proposal)(keys)
        return -jnp.mean(jax.nn.log_sigmoid(f(p, xs))) - jnp.mean(jax.nn.log_sigmoid(-f(p, xq)))

    def batch_loss(p, key):
        k_idx, k_prop = jax.random.split(key)
        xs = x_target[jax.random.randint(k_idx, (batch_size,), 0, n)]
        return objective(p, xs, jax.random.split(k_prop, batch_size))

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
        return params, losses

    params, losses = train(params, key_train)

    if markov:

        def log_ratio(x, xp):
            return f(params, jnp.concatenate([xp, x], -1)) - f(params, jnp.concatenate([x, xp], -1))
    else:

        def log_ratio(x):
            return f(params, x)

    @jax.jit
    def evaluate(key):
        k_idx, k_prop = jax.random.split(key)
        xs = x_eval[jax.random.randint(k_idx, (num_eval,), 0, x_eval.shape[0])]
        keys = jax.random.split(k_prop, num_eval)
        xp = jax.vmap(sample_proposal)(keys, xs) if markov else jax.vmap(sample_proposal)(keys)
        terms = pair_loss_terms(log_ratio, xs, xp, markov=markov)
        if exact_log_ratio is None:
            excess_terms = terms - loss_optimal
        else:
            excess_terms = terms - pair_loss_terms(exact_log_ratio, xs, xp, markov=markov)
        if markov:
            rho = jnp.asarray(1.0 if contraction is None else contraction)
        elif contraction is None:
            rho = independent_contraction(log_ratio, xp, jnp.asarray(x_all))
        else:
            rho = jnp.asarray(contraction)
        se = jnp.std(terms) / jnp.sqrt(num_eval)
        excess = jnp.mean(excess_terms) + 2.0 * jnp.std(excess_terms) / jnp.sqrt(num_eval)
        return objective(params, xs, keys), jnp.mean(terms), se, excess, rho

    loss, pair_loss, pair_se, excess, rho = evaluate(key_eval)
    bound = tv_bound(excess, 0.0, rho)
    return DiscriminatorFit(log_ratio, losses, loss, pair_loss, pair_se, excess, rho, bound)
