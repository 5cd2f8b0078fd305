import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from kernels.smc import resampling, sequential
from tests.kernels.smc._gaussian import assert_matches_before

# conjugate Gaussian: prior N(0, 1), y | x ~ N(x + 1, 0.5^2) observed at y = 2.2
Y, S, B = 2.2, 0.5, 1.0
LOG_Z = float(norm.logpdf(Y, B, np.sqrt(1 + S**2)))
PM, PS = (Y - B) / (1 + S**2), np.sqrt(S**2 / (1 + S**2))


def _log_joint(x):
    return norm.logpdf(x) + norm.logpdf(Y, x + B, S)


def test_exact_proposal_gives_exact_bounds():
    """Proposal = exact posterior: lower = upper = log Z to 1e-6 (float64)."""
    with jax.enable_x64(True):

        def init_fn(k, n):
            return {"x": PM + PS * jax.random.normal(k, (n,)), "aux": jnp.zeros((n, 3))}

        def init_lw(p):
            return _log_joint(p["x"]) - norm.logpdf(p["x"], PM, PS)

        def propose_fn(k, p, t):  # an exact posterior move (independent resampling)
            return {"x": PM + PS * jax.random.normal(k, p["x"].shape), "aux": p["aux"] + 1}

        def log_weight_fn(pp, p, t):
            return jnp.zeros_like(p["x"])

        ref = {"x": jnp.full(4, 0.3), "aux": jnp.zeros((4, 3))}
        for reference in (None, ref):
            res = jax.jit(
                lambda k, reference=reference: sequential.run(
                    k,
                    init_fn,
                    propose_fn,
                    log_weight_fn,
                    3,
                    16,
                    init_log_weight_fn=init_lw,
                    reference=reference,
                )
            )(jax.random.key(0))
            np.testing.assert_allclose(float(res.log_Z), LOG_Z, atol=1e-6)
            assert res.ess.shape == (4,) and res.resampled.shape == (3,)
            assert res.ancestors.shape == (3, 16)
            np.testing.assert_allclose(res.particles["aux"][1:], 3.0)
            if reference is not None:
                assert float(res.particles["x"][0]) == 0.3
                assert np.all(res.ancestors[:, 0] == 0)


def test_importance_sampling_unbiased_and_lower_bound():
    """T = 0 with the prior as proposal: E[Z_hat] = Z (z-score), E[log Z_hat] < log Z."""
    with jax.enable_x64(True):

        def one(k):
            return sequential.run(
                k,
                lambda kk, n: jax.random.normal(kk, (n,)),
                None,
                None,
                0,
                8,
                init_log_weight_fn=lambda x: norm.logpdf(Y, x + B, S),
            ).log_Z

        lz = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), 4000)))
        z = np.exp(lz - LOG_Z)
        assert abs((z.mean() - 1) / (z.std() / np.sqrt(z.size))) < 4  # z-score
        assert lz.mean() < LOG_Z


def test_all_minus_inf_weights():
    res = sequential.run(
        jax.random.key(0),
        lambda k, n: jnp.zeros(n),
        lambda k, x, t: x,
        lambda xp, x, t: jnp.full_like(x, -jnp.inf),
        2,
        4,
    )
    assert float(res.log_Z) == -np.inf
    assert np.all(np.isfinite(res.log_weights))  # uniform, documented
    np.testing.assert_allclose(res.log_weights, -np.log(4))


def test_resampling_trigger_in_driver():
    """ESS threshold 1: resample every step; 0: never (ancestors identity)."""

    def run(th):
        return sequential.run(
            jax.random.key(2),
            lambda k, n: jax.random.normal(k, (n,)),
            lambda k, x, t: x + jax.random.normal(k, x.shape),
            lambda xp, x, t: -(x**2),
            4,
            32,
            ess_threshold=th,
            resampling=resampling.stratified,
        )

    assert np.all(run(1.0).resampled)
    r0 = run(0.0)
    assert not np.any(r0.resampled)
    np.testing.assert_array_equal(r0.ancestors, np.tile(np.arange(32), (4, 1)))


def test_fused_step_matches_split_form():
    """The fused ``step_fn`` form gives the same run as propose/log_weight, with a reference."""

    def propose(k, x, t):
        return 0.9 * x + jax.random.normal(k, x.shape)

    def log_g(xp, x, t):
        return norm.logpdf(0.5 * t, x, 1.0)

    def step(k, x, t, ref_t=None):
        x = propose(k, x, t)
        if ref_t is not None:
            x = x.at[0].set(ref_t)
        return x, log_g(None, x, t)

    init = lambda k, n: jax.random.normal(k, (n,))
    ref = jnp.linspace(-1.0, 1.0, 4)
    for reference in (None, ref):
        a = sequential.run(jax.random.key(4), init, propose, log_g, 3, 8, reference=reference)
        b = sequential.run(jax.random.key(4), init, step, None, 3, 8, reference=reference)
        np.testing.assert_allclose(a.particles, b.particles, rtol=1e-6)
        np.testing.assert_allclose(float(a.log_Z), float(b.log_Z), rtol=1e-6)


def test_shape_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="leading axis num_particles=4"):
        sequential.run(key, lambda k, n: jnp.zeros(3), lambda k, x, t: x, lambda xp, x, t: x, 2, 4)
    with pytest.raises(ValueError, match="propose_fn must return particles"):
        sequential.run(
            key, lambda k, n: jnp.zeros(n), lambda k, x, t: x[:2], lambda xp, x, t: x, 2, 4
        )
    with pytest.raises(ValueError, match=r"shape \(num_particles,\) = \(4,\), got \(\)"):
        sequential.run(
            key, lambda k, n: jnp.zeros(n), lambda k, x, t: x, lambda xp, x, t: x.sum(), 2, 4
        )
    with pytest.raises(ValueError, match="num_particles >= 1"):
        sequential.run(key, lambda k, n: jnp.zeros(n), None, None, 0, 0)


# Regression: numbers of the pre-step-API driver (kernels/smc/sequential.py before run became a
# scan of kernels.smc.base.step), captured with these seeds; the rewrite reproduces them bitwise
# on CPU (tolerances allow only float rounding).
_BEFORE = {
    "seq": {
        "log_Z": -9.583139548200286,
        "incs": [-0.3897130455887434, -1.3323295403271689, -1.3778786585230907,
                 -1.627854781826559, -1.795447267572216, -1.6791059088062172,
                 -1.3808103455562895],
        "ess": [13.106304911417613, 8.207264508582979, 4.1934016132205105, 8.01074176048238,
                2.4159997600947105, 7.4825270954367005, 10.179791426291748],
        "resampled": [0, 0, 1, 0, 1, 1],
        "anc_sum": [120, 120, 88, 120, 74, 139],
        "x": [2.4514843478290183, 2.2221042004004694, 0.24154088490092596, 2.8709552347330813],
        "lw": [-2.3871356960169843, -2.135850084312411, -4.432404020475339, -3.12439412391085],
    },
    "seq_stratified_csmc": {
        "log_Z": -7.817987087770265,
        "incs": [0.0, -1.5501690649442808, -1.2719228301536245, -1.1895831065920945,
                 -1.228786280301767, -1.3056410566966745, -1.2718847490818241],
        "ess": [15.999999999999998, 9.003128204840877, 10.176354930214861, 10.93720599227716,
                11.136175579680065, 9.7316699004453, 10.655360517398291],
        "resampled": [0, 1, 1, 1, 1, 1],
        "anc_sum": [120, 117, 86, 115, 100, 107],
        "x": [1.0, 0.13573006217550296, 0.5633024516881379, 2.0187690773032765],
        "lw": [-2.716028786913693, -4.889288405226301, -3.623601058342847, -2.1118042044485166],
    },
    "seq_fused_csmc": {
        "log_Z": -7.563000338236773,
        "incs": [0.0, -1.3731022519268374, -1.3626888659057754, -1.406861316159262,
                 -0.9802938090771822, -1.1488193013042705, -1.291234793863446],
        "ess": [15.999999999999998, 10.020417960397296, 6.335736932896854, 9.353864947064732,
                7.420103203809756, 11.357600356073508, 8.858614681000482],
        "resampled": [0, 0, 1, 0, 1, 0],
        "anc_sum": [120, 120, 126, 120, 99, 120],
        "x": [1.0, 1.338622750986426, 1.656452251051558, 2.0287201449314103],
        "lw": [-2.8187398101390926, -2.057389771243976, -3.60065394583639, -2.7238567131496794],
    },
    "seq_f32": {
        "log_Z": -7.303407669067383,
        "incs": [0.0, -1.3758960962295532, -1.2945622205734253, -1.3153223991394043,
                 -0.9969509840011597, -1.2585387229919434, -1.0621370077133179],
        "ess": [16.0, 9.470401763916016, 5.711607933044434, 10.406391143798828,
                6.77288818359375, 10.79278564453125, 7.747841835021973],
        "resampled": [0, 0, 1, 0, 1, 0],
        "anc_sum": [120, 120, 142, 120, 109, 120],
        "x": [1.1293134689331055, -1.263418197631836, 0.6402137875556946, 1.651169776916504],
        "lw": [-2.0356292724609375, -13.286067008972168, -4.292699337005615, -2.1292672157287598],
    },
}  # fmt: skip


def test_same_numbers_as_before_the_step_api():
    """Same keys, same numbers as the implementation before run became a scan of base.step:
    plain, conditional (stratified, ESS threshold 0.8) and fused conditional SMC, float64 and
    float32."""

    def prop(k, x, t):
        return 0.9 * x + jax.random.normal(k, x.shape)

    def lg(xp, x, t):
        return norm.logpdf(0.3 * t, x, 0.7)

    def fused(k, x, t, ref_t=None):
        x = prop(k, x, t)
        if ref_t is not None:
            x = x.at[0].set(ref_t)
        return x, lg(None, x, t)

    def init(k, n):
        return jax.random.normal(k, (n,))

    with jax.enable_x64(True):
        ref = jnp.linspace(-1.0, 1.0, 7)
        runs = {
            "seq": lambda k: sequential.run(
                k, init, prop, lg, 6, 16, init_log_weight_fn=lambda x: -0.5 * x**2
            ),
            "seq_stratified_csmc": lambda k: sequential.run(
                k, init, prop, lg, 6, 16, reference=ref, resampling=resampling.stratified,
                ess_threshold=0.8,
            ),
            "seq_fused_csmc": lambda k: sequential.run(
                k, init, fused, None, 6, 16, reference=ref
            ),
        }  # fmt: skip
        for seed, (name, fn) in enumerate(runs.items(), start=11):
            assert_matches_before(jax.jit(fn)(jax.random.key(seed)), _BEFORE[name], 1e-10)
    res = jax.jit(lambda k: sequential.run(k, init, prop, lg, 6, 16))(jax.random.key(11))
    assert_matches_before(res, _BEFORE["seq_f32"], 1e-5)
