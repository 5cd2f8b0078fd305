"""Tests for kernels.implicit_mh: exact-ratio invariance and moments, learned discriminator."""

import functools

import blackjax.diagnostics
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from kernels import implicit_mh as imh


def _run(alg, key, x0, num_chains, num_steps):
    init = jax.vmap(alg.init)(jnp.broadcast_to(x0, (num_chains, *jnp.shape(x0))))

    @jax.jit
    def go(key, state):
        def body(s, k):
            s, info = jax.vmap(alg.step)(jax.random.split(k, num_chains), s)
            return s, (s.position, info.acceptance_rate)

        return jax.lax.scan(body, state, jax.random.split(key, num_steps))[1]

    return go(key, init)


def _z_scores(samples, mean):
    # samples: (steps, chains, dim) -> per-dim z-score of the grand mean, ESS from blackjax.
    s = np.asarray(samples)
    z = []
    for d in range(s.shape[-1]):
        c = np.swapaxes(s[..., d], 0, 1)
        ess = float(blackjax.diagnostics.effective_sample_size(c))
        z.append((c.mean() - mean[d]) / (c.std() / np.sqrt(ess)))
    return np.array(z)


def test_exact_ratio_independent_moments_1d_2d():
    # 1-d: target N(1, 0.5^2), proposal N(0, 1.5^2).
    lr = lambda x: jnp.sum(norm.logpdf(x, 1.0, 0.5) - norm.logpdf(x, 0.0, 1.5))  # noqa: E731
    alg = imh.independent(lambda k: 1.5 * jax.random.normal(k, (1,)), lr)
    pos, acc = _run(alg, jax.random.key(0), jnp.zeros(1), 64, 400)
    assert np.all(np.abs(_z_scores(pos[100:], [1.0])) < 4)  # z-score
    # 2-d correlated Gaussian target, broad isotropic proposal.
    mu = jnp.array([0.5, -1.0])
    cov = jnp.array([[1.0, 0.6], [0.6, 0.8]])
    lp = lambda x: jax.scipy.stats.multivariate_normal.logpdf(x, mu, cov)  # noqa: E731
    lq = lambda x: jnp.sum(norm.logpdf(x, 0.0, 2.5))  # noqa: E731
    alg = imh.independent(lambda k: 2.5 * jax.random.normal(k, (2,)), lambda x: lp(x) - lq(x))
    pos, _ = _run(alg, jax.random.key(1), jnp.zeros(2), 64, 400)
    assert np.all(np.abs(_z_scores(pos[100:], np.asarray(mu))) < 4)  # z-score
    # second moment (variance of x0) through the same z-score on x0^2.
    sq = np.asarray(pos[100:, :, :1]) ** 2
    assert abs(_z_scores(sq, [1.0 + 0.25])[0]) < 4  # z-score


def test_exact_ratio_markov_moments_2d():
    mu = jnp.array([1.0, 0.0])
    lp = lambda x: jnp.sum(norm.logpdf(x, mu, jnp.array([1.0, 0.5])))  # noqa: E731
    # symmetric random walk: q(x|x') = q(x'|x), so r(x, x') = log p(x') - log p(x).
    alg = imh.markov(
        lambda k, x: x + 0.8 * jax.random.normal(k, x.shape), lambda x, y: lp(y) - lp(x)
    )
    pos, _ = _run(alg, jax.random.key(2), jnp.zeros(2), 64, 600)
    assert np.all(np.abs(_z_scores(pos[150:], np.asarray(mu))) < 4)  # z-score


def _transition_matrix(alg_builder, pi, Q, markov):
    """P[i, j] = Q[i, j] * acceptance(i -> j) computed by the kernel's own step."""
    K = len(pi)
    P = np.zeros((K, K))
    for j in range(K):
        if markov:
            alg = alg_builder(lambda k, x, j=j: jnp.asarray(j))
        else:
            alg = alg_builder(lambda k, j=j: jnp.asarray(j))
        for i in range(K):
            _, info = alg.step(jax.random.key(0), alg.init(jnp.asarray(i)))
            P[i, j] = Q[i, j] * float(info.acceptance_rate) if i != j else 0.0
    P[np.arange(K), np.arange(K)] = 1.0 - P.sum(1)
    return P


def test_exact_invariance_finite_state_space():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        K = 8
        pi = rng.dirichlet(np.ones(K))
        q = rng.dirichlet(np.ones(K))
        lpi, lq = jnp.log(jnp.asarray(pi)), jnp.log(jnp.asarray(q))
        # independent
        P = _transition_matrix(
            lambda s: imh.independent(s, lambda x: lpi[x] - lq[x]), pi, np.tile(q, (K, 1)), False
        )
        np.testing.assert_allclose(pi @ P, pi, atol=1e-10)
        # Markov, non-symmetric proposal matrix Q[i, j] = q(j | i).
        Q = rng.dirichlet(np.ones(K), size=K)
        lQ = jnp.log(jnp.asarray(Q))
        P = _transition_matrix(
            lambda s: imh.markov(s, lambda x, y: lpi[y] + lQ[y, x] - lpi[x] - lQ[x, y]), pi, Q, True
        )
        np.testing.assert_allclose(pi @ P, pi, atol=1e-10)
        assert np.all(P >= -1e-15)


def test_nan_ratio_rejected():
    alg = imh.independent(lambda k: jnp.ones(1), lambda x: jnp.where(x[0] > 0.5, jnp.nan, 0.0))
    s = alg.init(jnp.zeros(1))
    s2, info = alg.step(jax.random.key(0), s)
    assert not bool(info.is_accepted) and float(info.acceptance_rate) == 0.0
    assert np.all(np.isfinite(s2.position))


def test_errors():
    with pytest.raises(ValueError, match="scalar"):
        imh.independent(lambda k: jnp.zeros(2), lambda x: x).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="scalar"):
        imh.markov(lambda k, x: x, lambda x, y: y).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        imh.fit_discriminator(jax.random.key(0), np.zeros(10), lambda k: jnp.zeros(1))
    with pytest.raises(ValueError, match="non-finite"):
        imh.fit_discriminator(jax.random.key(0), np.full((10, 2), np.nan), lambda k: jnp.zeros(2))
    with pytest.raises(ValueError, match="one point"):
        imh.fit_discriminator(jax.random.key(0), np.zeros((10, 2)), lambda k: jnp.zeros(3))


# ------------------------------------------------------------------ learned discriminator

MEANS = np.array([[-1.5, 0.0], [1.5, 0.5]])
SD = 0.5
QSD = 2.5


def _mixture_sample(rng, n):
    c = rng.integers(0, 2, n)
    return MEANS[c] + SD * rng.standard_normal((n, 2))


@functools.cache
def _fit():
    rng = np.random.default_rng(0)
    target = _mixture_sample(rng, 4000)
    sample_q = lambda k: QSD * jax.random.normal(k, (2,))  # noqa: E731
    fit = imh.fit_discriminator(jax.random.key(3), target, sample_q, num_steps=1500)
    return fit, sample_q


def _energy_perm_pvalue(x, y, num_perm, key):
    obs = imh.energy_distance(x, y)
    z = jnp.concatenate([x, y])
    n = x.shape[0]

    def one(k):
        zz = jax.random.permutation(k, z)
        return imh.energy_distance(zz[:n], zz[n:])

    perm = jax.lax.map(one, jax.random.split(key, num_perm))
    return obs, (1 + jnp.sum(perm >= obs)) / (1 + num_perm)


def test_learned_discriminator_improves_and_tv_bound_holds():
    fit, sample_q = _fit()
    assert fit.loss_history.shape == (1500,)
    assert float(fit.loss_history[-50:].mean()) < float(fit.loss_history[:50].mean())
    alg = imh.independent(sample_q, fit.log_ratio)
    n = 400
    pos, _ = _run(alg, jax.random.key(4), jnp.zeros(2), n, 60)
    chain = pos[-1]
    rng = np.random.default_rng(1)
    fresh = jnp.asarray(_mixture_sample(rng, n))
    prop = jax.vmap(sample_q)(jax.random.split(jax.random.key(5), n))
    e_chain = imh.energy_distance(chain, fresh)
    e_prop, p_prop = _energy_perm_pvalue(prop, fresh, 200, jax.random.key(6))
    # Proposal is distinguishable from the target (p < 0.01) and the chain is closer.
    assert float(p_prop) < 0.01
    # The chain is at least twice as close to the target as the proposal (energy distance).
    assert float(e_chain) < 0.5 * float(e_prop)
    # TV on a fine grid: stationary density of independent MH with ratio r is q * e^r / Z.
    g = np.linspace(-9, 9, 361)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([X.ravel(), Y.ravel()], -1))
    lq = jnp.sum(norm.logpdf(pts, 0.0, QSD), -1)
    lpi = lq + jax.vmap(fit.log_ratio)(pts)
    pi = np.exp(np.asarray(lpi - lpi.max()))
    pi /= pi.sum()
    lp = jnp.logaddexp(
        jnp.sum(norm.logpdf(pts, MEANS[0], SD), -1), jnp.sum(norm.logpdf(pts, MEANS[1], SD), -1)
    )
    p = np.exp(np.asarray(lp - lp.max()))
    p /= p.sum()
    tv_grid = 0.5 * np.abs(pi - p).sum()
    q = np.exp(np.asarray(lq - lq.max()))
    q /= q.sum()
    tv_q = 0.5 * np.abs(q - p).sum()
    assert tv_grid < tv_q  # the chain's stationary law is closer to p than q is
    assert float(fit.tv_bound) >= tv_grid


def test_markov_discriminator_runs():
    rng = np.random.default_rng(2)
    target = _mixture_sample(rng, 2000)
    sample_q = lambda k, x: x + 0.7 * jax.random.normal(k, x.shape)  # noqa: E731
    fit = imh.fit_discriminator(jax.random.key(7), target, sample_q, markov=True, num_steps=300)
    assert np.all(np.isfinite(np.asarray(fit.loss_history)))
    alg = imh.markov(sample_q, fit.log_ratio)
    pos, acc = _run(alg, jax.random.key(8), jnp.zeros(2), 32, 50)
    assert np.all(np.isfinite(np.asarray(pos)))
    # learned ratio is antisymmetric: r(x, x') = -r(x', x)
    a, b = jnp.array([0.1, 0.2]), jnp.array([-0.3, 1.0])
    np.testing.assert_allclose(fit.log_ratio(a, b), -fit.log_ratio(b, a), atol=1e-5)
