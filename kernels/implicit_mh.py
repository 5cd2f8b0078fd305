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
