import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.smc import resampling as rs

W = np.array([0.05, 0.3, 0.0, 0.15, 0.02, 0.48])
with np.errstate(divide="ignore"):
    LOG_W = np.log(W) - 1e3  # large offset (float32-exact enough) and a -inf weight
N = W.shape[0]
R = 4000


def _counts(scheme, num_samples, conditional=False):
    keys = jax.random.split(jax.random.key(0), R)
    anc = jax.jit(jax.vmap(lambda k: scheme(k, jnp.asarray(LOG_W, jnp.float32), num_samples)))(keys)
    anc = np.asarray(anc)
    return anc, np.stack([(anc == i).sum(1) for i in range(N)], 1)


@pytest.mark.parametrize("name", list(rs.SCHEMES))
@pytest.mark.parametrize("m", [6, 11])
def test_unbiased_offspring_counts(name, m):
    anc, counts = _counts(rs.SCHEMES[name], m)
    assert anc.shape == (R, m) and anc.dtype == np.int32
    assert np.all(counts[:, 2] == 0)  # zero weight never selected
    mean, sd = counts.mean(0), counts.std(0) + 1e-12
    z = (mean - m * W) / (sd / np.sqrt(R))
    assert np.all(np.abs(z[W > 0]) < 4.5), z  # z-score (6 weights, Bonferroni-ish)


@pytest.mark.parametrize("m", [6, 11])
def test_low_variance_properties(m):
    _, c_mult = _counts(rs.multinomial, m)
    _, c_sys = _counts(rs.systematic, m)
    _, c_strat = _counts(rs.stratified, m)
    _, c_res = _counts(rs.residual, m)
    floor, ceil = np.floor(m * W), np.ceil(m * W)
    # systematic: every count is floor or ceil of M W_i
    assert np.all((c_sys >= floor) & (c_sys <= ceil))
    # residual: at least floor(M W_i) copies
    assert np.all(c_res >= floor)
    # stratified: each count within floor - 1 .. ceil + 1; variance below multinomial
    assert np.all((c_strat >= floor - 1) & (c_strat <= ceil + 1))
    # total offspring variance well below multinomial's (exact: sum M W_i (1 - W_i))
    v_mult = np.sum(m * W * (1 - W))
    assert abs(c_mult.var(0).sum() / v_mult - 1) < 0.1  # MC error of a variance, R = 4000
    for c in (c_sys, c_strat, c_res):
        assert c.var(0).sum() < 0.7 * v_mult


W_REF = np.roll(W, -1)  # the reference (index 0) has weight 0.3; index 1 has weight 0


@pytest.mark.parametrize("name", list(rs.SCHEMES))
def test_conditional_is_size_biased_exchangeable_scheme(name):
    """Given A_0 = 0, the offspring counts of the conditional scheme follow the exchangeable
    scheme (random input permutation) size-biased by the reference's count:
    E[c_i | A_0 = 0] = E[c_i c_0] / (M W_0) (the exact law is enumerated in test_enumeration)."""
    scheme, m = rs.SCHEMES[name], 7
    with jax.enable_x64(True):
        lw = jnp.asarray(np.where(W_REF > 0, np.log(np.maximum(W_REF, 1e-300)), -np.inf) - 1e3)
        keys = jax.random.split(jax.random.key(4), R)
        cond = np.asarray(jax.jit(jax.vmap(lambda k: rs.conditional(scheme)(k, lw, m)))(keys))

        def exch(k):
            k1, k2 = jax.random.split(k)
            perm = jax.random.permutation(k1, N)
            return perm[scheme(k2, lw[perm], m)]

        unc = np.asarray(jax.jit(jax.vmap(exch))(jax.random.split(jax.random.key(5), R)))
    assert np.all(cond[:, 0] == 0) and not np.any(cond == 1)  # reference kept, zero weight never
    c_cond = np.stack([(cond == i).sum(1) for i in range(N)], 1).astype(float)
    c_unc = np.stack([(unc == i).sum(1) for i in range(N)], 1).astype(float)
    sb = c_unc * c_unc[:, :1] / (m * W_REF[0])  # size-biased by the reference's count
    se = np.sqrt(c_cond.var(0) / R + sb.var(0) / R) + 1e-12
    z = (c_cond.mean(0) - sb.mean(0)) / se
    assert np.all(np.abs(z) < 4.5), z  # z-scores (6 counts)
    np.testing.assert_allclose(c_cond.sum(1), m)


def test_conditional_multinomial_exact_law():
    # P(A_1 = i) = W_i, A_0 = 0 (reference), independent of the reference weight
    anc, _ = _counts(rs.conditional_multinomial, 2)
    freq = np.bincount(anc[:, 1], minlength=N) / R
    se = np.sqrt(W * (1 - W) / R) + 1e-12
    assert np.all(np.abs((freq - W) / se)[W > 0] < 4.5)  # z-score


def test_offset_invariance_and_all_inf():
    lw = jnp.asarray(LOG_W + 1e3, jnp.float32)
    key = jax.random.key(3)
    for scheme in rs.SCHEMES.values():
        scheme = jax.jit(scheme, static_argnums=2)
        a = scheme(key, lw, 8)
        b = scheme(key, lw - 1e4, 8)
        np.testing.assert_array_equal(a, b)
        allinf = scheme(key, jnp.full(5, -jnp.inf), 5)
        assert np.all((allinf >= 0) & (allinf < 5))
    np.testing.assert_allclose(rs.normalize(jnp.full(4, -jnp.inf)), np.full(4, -np.log(4)))
    assert float(rs.ess(jnp.full(4, -jnp.inf))) == pytest.approx(1.0)
    # float32 spacing at 1e4 is 1e-3: the offset perturbs log weights by that much
    np.testing.assert_allclose(float(rs.ess(lw - 1e4)), 1 / np.sum(W**2), rtol=3e-3)
    np.testing.assert_allclose(float(rs.ess(jnp.zeros(7))), 7.0, rtol=1e-6)


def test_resample_if_under_scan_jit():
    lw_bad = jnp.asarray(LOG_W + 1e3, jnp.float32)
    lw_good = jnp.zeros(N)

    @jax.jit
    def f(key):
        def body(c, x):
            k, lw = x
            anc, did, after = rs.resample_if(k, lw, 0.5, rs.systematic)
            return c, (anc, did, after)

        keys = jax.random.split(key, 2)
        return jax.lax.scan(body, 0, (keys, jnp.stack([lw_bad, lw_good])))[1]

    anc, did, after = f(jax.random.key(1))
    assert bool(did[0]) and not bool(did[1])
    np.testing.assert_array_equal(anc[1], np.arange(N))
    # mass preserved: logsumexp of the weights unchanged
    np.testing.assert_allclose(jax.nn.logsumexp(after[0]), jax.nn.logsumexp(lw_bad), atol=1e-5)
    np.testing.assert_allclose(
        after[0], np.full(N, jax.nn.logsumexp(lw_bad) - np.log(N)), atol=1e-5
    )
    # threshold 1 always resamples, 0 never
    assert bool(rs.resample_if(jax.random.key(0), lw_good, 1.0)[1])
    assert not bool(rs.resample_if(jax.random.key(0), lw_bad, 0.0)[1])


# BlackJAX's convention: its resampling functions take normalized probabilities.


@pytest.mark.parametrize(
    "name",
    [n if n == "systematic" else pytest.param(n, marks=pytest.mark.slow) for n in rs.SCHEMES],
)
def test_probabilities_refused_eagerly_and_under_jit(name):
    scheme = rs.SCHEMES[name]
    w = jnp.asarray(W, jnp.float32)
    with pytest.raises(rs.ProbabilityWeightsError, match="for_blackjax"):
        scheme(jax.random.key(0), w, N)
    batched = jax.jit(jax.vmap(lambda k, w: scheme(k, w, N)))
    keys = jax.random.split(jax.random.key(0), 3)
    ws = jnp.stack([jnp.asarray(LOG_W, jnp.float32), w, jnp.zeros(N)])
    with pytest.raises(Exception, match="LOG weights"):
        jax.block_until_ready(batched(keys, ws))
    # log weights, a constant vector (both readings agree), check=False, N = 1: accepted
    jax.block_until_ready(batched(keys, ws.at[1].set(jnp.log(w + 1e-3))))
    scheme(jax.random.key(0), jnp.full(N, 1.0 / N), N)
    scheme(jax.random.key(0), w, N, check=False)
    scheme(jax.random.key(0), jnp.ones(1), 3)


@pytest.mark.parametrize(
    "name",
    [n if n == "systematic" else pytest.param(n, marks=pytest.mark.slow) for n in rs.SCHEMES],
)
def test_for_blackjax_takes_probabilities(name):
    scheme = rs.for_blackjax(rs.SCHEMES[name])
    keys = jax.random.split(jax.random.key(1), R)
    anc = np.asarray(jax.jit(jax.vmap(lambda k: scheme(k, jnp.asarray(W, jnp.float32), N)))(keys))
    counts = np.stack([(anc == i).sum(1) for i in range(N)], 1)
    assert np.all(counts[:, 2] == 0)
    z = (counts.mean(0) - N * W) / (counts.std(0) / np.sqrt(R) + 1e-12)
    assert np.all(np.abs(z[W > 0]) < 4.5), z  # z-score
    # negative control: the same probabilities read as log weights resample almost uniformly
    plain = jax.vmap(lambda k: rs.SCHEMES[name](k, jnp.asarray(W, jnp.float32), N, check=False))
    wrong = np.asarray(jax.jit(plain)(keys))
    assert abs((wrong == 5).sum(1).mean() - N * W[5]) > 1.0  # 2.88 expected, about 1.3 seen


def test_for_blackjax_matches_blackjax_systematic():
    from blackjax.smc import resampling as bj

    w = jnp.asarray(W, jnp.float32)
    for seed in range(20):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(
            rs.for_blackjax(rs.systematic)(key, w, N), bj.systematic(key, w, N)
        )


def test_misuse_inside_blackjax_tempered_smc_raises():
    import blackjax
    from blackjax.smc import extend_params

    def logprior(x):
        return -0.5 * jnp.sum(x**2)

    def loglik(x):
        return -0.5 * jnp.sum((x - 1.0) ** 2)

    def build(scheme):
        return blackjax.tempered_smc(
            logprior,
            loglik,
            blackjax.hmc.build_kernel(),
            blackjax.hmc.init,
            extend_params(
                {"step_size": 0.3, "inverse_mass_matrix": jnp.ones(2), "num_integration_steps": 3}
            ),
            scheme,
            num_mcmc_steps=1,
        )

    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    for scheme in (rs.systematic, rs.for_blackjax(rs.systematic)):
        smc = build(scheme)
        step = jax.jit(smc.step)
        state = smc.init(x0)
        # the first step resamples uniform weights (both readings agree), the second does not
        state, _ = step(jax.random.key(1), state, 0.5)
        if scheme is rs.systematic:
            with pytest.raises(Exception, match="LOG weights"):
                jax.block_until_ready(step(jax.random.key(2), state, 1.0))
        else:
            state, info = step(jax.random.key(2), state, 1.0)
            assert np.isfinite(float(info.log_likelihood_increment))
