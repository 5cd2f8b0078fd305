"""Tests for kernels.implicit_mh: exact-ratio invariance and moments, the pair loss and TV bound."""

import blackjax.diagnostics
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from kernels import implicit_mh as imh
from tests.kernels._imh_mixture import log_p, log_q, mixture_sample, sample_q


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
    with pytest.raises(AttributeError, match="ppl.discriminator"):
        imh.fit_discriminator  # noqa: B018  (moved out of the pure-JAX layer)


def test_tv_bound_formula():
    assert float(imh.tv_bound(0.01 + 0.3, 0.3, 0.5)) == pytest.approx(2 * 0.1 / 0.5)
    assert float(imh.tv_bound(0.3, 0.31, 0.5)) == 0.0  # excess clipped at 0
    assert float(imh.tv_bound(0.0001, 0.0, 1.0)) == 1.0  # no contraction known
    assert float(imh.tv_bound(2.0)) == 1.0


def test_pair_loss_terms_minimised_by_exact_ratio():
    """L(d) - L(d*) = int (a + b) KL(d* || d) >= 0: the exact ratio has the smallest pair loss."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(mixture_sample(rng, 50000))
    xp = jax.vmap(sample_q)(jax.random.split(jax.random.key(8), 50000))
    exact = imh.pair_loss_terms(lambda z: log_p(z) - log_q(z), x, xp)
    for wrong in (lambda z: 0.0 * z[0], lambda z: 0.8 * (log_p(z) - log_q(z))):
        diff = np.asarray(imh.pair_loss_terms(wrong, x, xp) - exact)
        z = diff.mean() / (diff.std() / np.sqrt(len(diff)))
        assert z > 4, z  # z-score
    # Markov form on an independent proposal gives the same terms
    lr = lambda z: log_p(z) - log_q(z)  # noqa: E731
    markov = imh.pair_loss_terms(lambda a, b: lr(b) - lr(a), x[:100], xp[:100], markov=True)
    np.testing.assert_allclose(markov, exact[:100], rtol=1e-5, atol=1e-6)
