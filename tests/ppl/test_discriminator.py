"""Tests for ppl.discriminator: the learned implicit-MH ratio improves on the proposal and the
reported total-variation bound holds."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import implicit_mh as imh
from ppl.discriminator import fit_discriminator
from tests.kernels._imh_mixture import log_p, log_q, mixture_sample, sample_q


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        fit_discriminator(jax.random.key(0), np.zeros(10), lambda k: jnp.zeros(1))
    with pytest.raises(ValueError, match="non-finite"):
        fit_discriminator(jax.random.key(0), np.full((10, 2), np.nan), lambda k: jnp.zeros(2))
    with pytest.raises(ValueError, match="one point"):
        fit_discriminator(jax.random.key(0), np.zeros((10, 2)), lambda k: jnp.zeros(3))


@functools.cache
def _fit():
    target = mixture_sample(np.random.default_rng(0), 20000)
    return fit_discriminator(
        jax.random.key(3),
        target,
        sample_q,
        num_steps=5000,
        exact_log_ratio=lambda x: log_p(x) - log_q(x),  # synthetic check: p and q known
    )


def _energy_closer_pvalue(x, y, target, num_perm, key):
    """Permutation test of H0: x and y are equally close to target in energy distance.

    Statistic ED(y, target) - ED(x, target) (large when x is closer); the pooled x and y are
    relabelled at random. Returns (statistic, one-sided p-value).
    """
    pool = jnp.concatenate([x, y])
    n = x.shape[0]
    d_pt = jnp.sqrt(jnp.sum((pool[:, None] - target[None]) ** 2, -1) + 1e-30).mean(1)
    d_pp = jnp.sqrt(jnp.sum((pool[:, None] - pool[None]) ** 2, -1) + 1e-30)

    def stat(idx):
        a, b = idx[:n], idx[n:]
        ed_a = 2 * d_pt[a].mean() - d_pp[a][:, a].mean()
        ed_b = 2 * d_pt[b].mean() - d_pp[b][:, b].mean()
        return ed_b - ed_a  # the target-target term cancels

    obs = stat(jnp.arange(2 * n))
    perms = jax.vmap(lambda k: jax.random.permutation(k, 2 * n))(jax.random.split(key, num_perm))
    null = jax.lax.map(stat, perms)
    return float(obs), float((1 + jnp.sum(null >= obs)) / (1 + num_perm))


def _grid():
    g = np.linspace(-9, 9, 361)
    X, Y = np.meshgrid(g, g, indexing="ij")
    return jnp.asarray(np.stack([X.ravel(), Y.ravel()], -1))


def _normalise(log_w):
    w = np.exp(np.asarray(log_w - log_w.max(), np.float64))
    return w / w.sum()


def test_learned_discriminator_improves_and_tv_bound_holds():
    fit = _fit()
    assert fit.loss_history.shape == (5000,)
    assert float(fit.loss_history[-100:].mean()) < float(fit.loss_history[:100].mean())
    # chains started from proposal draws, last state of each of 1000 independent chains
    n = 1000
    alg = imh.independent(sample_q, fit.log_ratio)
    x0 = jax.vmap(sample_q)(jax.random.split(jax.random.key(4), n))
    init = jax.vmap(alg.init)(x0)

    @jax.jit
    def chains(key):
        def body(s, k):
            return jax.vmap(alg.step)(jax.random.split(k, n), s)[0], None

        return jax.lax.scan(body, init, jax.random.split(key, 100))[0].position

    chain = chains(jax.random.key(5))
    fresh = jnp.asarray(mixture_sample(np.random.default_rng(1), n))
    prop = jax.vmap(sample_q)(jax.random.split(jax.random.key(6), n))
    # The chain is measurably closer to the target than the proposal (permutation test).
    stat, p_value = _energy_closer_pvalue(chain, prop, fresh, 200, jax.random.key(7))
    assert stat > 0 and p_value < 0.01, (stat, p_value)

    # Stationary law of the independent chain with ratio r: q e^r / Z, on a fine grid.
    pts = _grid()
    log_q_pts = log_q(pts)
    t_inf, p, q = (
        _normalise(log_q_pts + jax.vmap(fit.log_ratio)(pts)),
        _normalise(log_p(pts)),
        _normalise(log_q_pts),
    )
    tv_grid, tv_q = 0.5 * np.abs(t_inf - p).sum(), 0.5 * np.abs(q - p).sum()
    assert tv_grid < 0.25 * tv_q  # the chain's stationary law is much closer to p than q is
    # The reported bound (excess pair loss against the exact ratio, estimated contraction) is
    # above the grid TV and informative; so is the bound with the grid's contraction coefficient.
    assert tv_grid <= float(fit.tv_bound) < 1.0, (tv_grid, fit)
    rho_grid = 1.0 - 1.0 / float(np.max(t_inf / q))
    assert abs(float(fit.contraction) - rho_grid) < 0.02, (fit.contraction, rho_grid)
    assert tv_grid <= float(imh.tv_bound(fit.excess_loss, 0.0, rho_grid)) < 1.0
    # Without knowledge of L(d*) the bound is valid but vacuous.
    assert float(imh.tv_bound(fit.pair_loss, 0.0, fit.contraction)) == 1.0


def test_markov_discriminator_learns_the_ratio():
    rng = np.random.default_rng(2)
    target = mixture_sample(rng, 20000)
    step = 0.7
    sample_q = lambda k, x: x + step * jax.random.normal(k, x.shape)  # noqa: E731
    exact = lambda x, y: log_p(y) - log_p(x)  # noqa: E731  (symmetric proposal)
    fit = fit_discriminator(
        jax.random.key(7), target, sample_q, markov=True, num_steps=3000, exact_log_ratio=exact
    )
    assert np.all(np.isfinite(np.asarray(fit.loss_history)))
    assert float(fit.contraction) == 1.0 and float(fit.tv_bound) == 1.0  # no rho for Markov
    # learned ratio is antisymmetric: r(x, x') = -r(x', x)
    a, b = jnp.array([0.1, 0.2]), jnp.array([-0.3, 1.0])
    np.testing.assert_allclose(fit.log_ratio(a, b), -fit.log_ratio(b, a), atol=1e-5)
    # excess pair loss: much smaller than that of the uninformative ratio r = 0
    x = jnp.asarray(mixture_sample(np.random.default_rng(3), 20000))
    xp = jax.vmap(sample_q)(jax.random.split(jax.random.key(9), 20000), x)
    exact_terms = imh.pair_loss_terms(exact, x, xp, markov=True)
    learned = np.asarray(imh.pair_loss_terms(fit.log_ratio, x, xp, markov=True) - exact_terms)
    zero = np.asarray(
        imh.pair_loss_terms(lambda u, v: 0.0 * u[0], x, xp, markov=True) - exact_terms
    )
    assert learned.mean() < 0.1 * zero.mean(), (learned.mean(), zero.mean())
    # chains started at target samples stay near the target; with r = 0 (always accept) the
    # random walk diffuses away: permutation test on the energy distance
    n = 800
    start = jnp.asarray(target[:n])

    def run(log_ratio, key):
        alg = imh.markov(sample_q, log_ratio)
        state = jax.vmap(alg.init)(start)

        def body(s, k):
            return jax.vmap(alg.step)(jax.random.split(k, n), s)[0], None

        return jax.jit(lambda s: jax.lax.scan(body, s, jax.random.split(key, 40))[0])(state)

    learned_chain = run(fit.log_ratio, jax.random.key(10)).position
    walk = run(lambda u, v: 0.0 * u[0], jax.random.key(11)).position
    fresh = jnp.asarray(mixture_sample(np.random.default_rng(5), n))
    stat, p_value = _energy_closer_pvalue(learned_chain, walk, fresh, 200, jax.random.key(12))
    assert stat > 0 and p_value < 0.01, (stat, p_value)
