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

# Target: equal mixture of N(MEANS[k], SD^2 I), known only by samples. Independent proposal: a broad
# Gaussian covering both modes (sd 2.0 and 1.0 against 1.6 and 0.56 for the target), for which
# sup p/q is about 5.6, so that the bound 2 sqrt(excess) / (1 - rho) can be informative.
MEANS = np.array([[-1.5, 0.0], [1.5, 0.5]])
SD = 0.5
Q_MEAN, Q_SD = np.array([0.0, 0.25]), np.array([2.0, 1.0])


def _mixture_sample(rng, n):
    c = rng.integers(0, 2, n)
    return MEANS[c] + SD * rng.standard_normal((n, 2))


def _log_p(x):
    comps = [jnp.sum(norm.logpdf(x, m, SD), -1) for m in MEANS]
    return jnp.logaddexp(*comps) - jnp.log(2.0)


def _log_q(x):
    return jnp.sum(norm.logpdf(x, Q_MEAN, Q_SD), -1)


def _sample_q(key):
    return Q_MEAN + Q_SD * jax.random.normal(key, (2,))


@functools.cache
def _fit():
    target = _mixture_sample(np.random.default_rng(0), 20000)
    return imh.fit_discriminator(
        jax.random.key(3),
        target,
        _sample_q,
        num_steps=5000,
        exact_log_ratio=lambda x: _log_p(x) - _log_q(x),  # synthetic check: p and q known
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
    alg = imh.independent(_sample_q, fit.log_ratio)
    x0 = jax.vmap(_sample_q)(jax.random.split(jax.random.key(4), n))
    init = jax.vmap(alg.init)(x0)

    @jax.jit
    def chains(key):
        def body(s, k):
            return jax.vmap(alg.step)(jax.random.split(k, n), s)[0], None

        return jax.lax.scan(body, init, jax.random.split(key, 100))[0].position

    chain = chains(jax.random.key(5))
    fresh = jnp.asarray(_mixture_sample(np.random.default_rng(1), n))
    prop = jax.vmap(_sample_q)(jax.random.split(jax.random.key(6), n))
    # The chain is measurably closer to the target than the proposal (permutation test).
    stat, p_value = _energy_closer_pvalue(chain, prop, fresh, 200, jax.random.key(7))
    assert stat > 0 and p_value < 0.01, (stat, p_value)

    # Stationary law of the independent chain with ratio r: q e^r / Z, on a fine grid.
    pts = _grid()
    log_q = _log_q(pts)
    t_inf, p, q = (
        _normalise(log_q + jax.vmap(fit.log_ratio)(pts)),
        _normalise(_log_p(pts)),
        _normalise(log_q),
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


def test_tv_bound_formula():
    assert float(imh.tv_bound(0.01 + 0.3, 0.3, 0.5)) == pytest.approx(2 * 0.1 / 0.5)
    assert float(imh.tv_bound(0.3, 0.31, 0.5)) == 0.0  # excess clipped at 0
    assert float(imh.tv_bound(0.0001, 0.0, 1.0)) == 1.0  # no contraction known
    assert float(imh.tv_bound(2.0)) == 1.0


def test_pair_loss_terms_minimised_by_exact_ratio():
    """L(d) - L(d*) = int (a + b) KL(d* || d) >= 0: the exact ratio has the smallest pair loss."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(_mixture_sample(rng, 50000))
    xp = jax.vmap(_sample_q)(jax.random.split(jax.random.key(8), 50000))
    exact = imh.pair_loss_terms(lambda z: _log_p(z) - _log_q(z), x, xp)
    for wrong in (lambda z: 0.0 * z[0], lambda z: 0.8 * (_log_p(z) - _log_q(z))):
        diff = np.asarray(imh.pair_loss_terms(wrong, x, xp) - exact)
        z = diff.mean() / (diff.std() / np.sqrt(len(diff)))
        assert z > 4, z  # z-score
    # Markov form on an independent proposal gives the same terms
    lr = lambda z: _log_p(z) - _log_q(z)  # noqa: E731
    markov = imh.pair_loss_terms(lambda a, b: lr(b) - lr(a), x[:100], xp[:100], markov=True)
    np.testing.assert_allclose(markov, exact[:100], rtol=1e-5, atol=1e-6)


def test_markov_discriminator_learns_the_ratio():
    rng = np.random.default_rng(2)
    target = _mixture_sample(rng, 20000)
    step = 0.7
    sample_q = lambda k, x: x + step * jax.random.normal(k, x.shape)  # noqa: E731
    exact = lambda x, y: _log_p(y) - _log_p(x)  # noqa: E731  (symmetric proposal)
    fit = imh.fit_discriminator(
        jax.random.key(7), target, sample_q, markov=True, num_steps=3000, exact_log_ratio=exact
    )
    assert np.all(np.isfinite(np.asarray(fit.loss_history)))
    assert float(fit.contraction) == 1.0 and float(fit.tv_bound) == 1.0  # no rho for Markov
    # learned ratio is antisymmetric: r(x, x') = -r(x', x)
    a, b = jnp.array([0.1, 0.2]), jnp.array([-0.3, 1.0])
    np.testing.assert_allclose(fit.log_ratio(a, b), -fit.log_ratio(b, a), atol=1e-5)
    # excess pair loss: much smaller than that of the uninformative ratio r = 0
    x = jnp.asarray(_mixture_sample(np.random.default_rng(3), 20000))
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
    fresh = jnp.asarray(_mixture_sample(np.random.default_rng(5), n))
    stat, p_value = _energy_closer_pvalue(learned_chain, walk, fresh, 200, jax.random.key(12))
    assert stat > 0 and p_value < 0.01, (stat, p_value)
