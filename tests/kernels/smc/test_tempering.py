"""Tempered SMC / AIS bounds on a conjugate Gaussian with an asymmetric (shifted) likelihood."""

import functools
import typing

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.smc import annealing, estimators, tempering
from tests.kernels.smc._gaussian import (
    BETAS,
    LOG_Z,
    PARAMS,
    POST_MEAN,
    POST_SD,
    D,
    assert_matches_before,
    log_lik,
    log_prior,
    sample_prior,
)

R = 96


def _run(key, n, reference=None, betas=BETAS, ess_threshold=0.5):
    return tempering.run(
        key,
        sample_prior,
        log_prior,
        log_lik,
        betas,
        blackjax.hmc,
        n,
        kernel_params=PARAMS,
        num_mcmc_steps=1,
        reference=reference,
        ess_threshold=ess_threshold,
    )


def _ref(key, betas=BETAS):
    k1, k2 = jax.random.split(key)
    x = POST_MEAN + POST_SD * jax.random.normal(k1, (D,))
    return tempering.reference_path(
        k2, x, log_prior, log_lik, betas, blackjax.hmc, kernel_params=PARAMS
    )


def _exact_draw(k):
    return POST_MEAN + POST_SD * jax.random.normal(k, (D,))


@functools.cache
def _bounds(n):
    """R lower and upper bounds; N = 1 through the AIS / reverse-AIS estimators."""
    with jax.enable_x64(True):
        key = jax.random.key(n)
        if n == 1:
            kw = dict(kernel_params=PARAMS)
            lo = jax.jit(
                lambda k: estimators.ais_lower_bound(
                    k, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, R, **kw
                )
            )(key)
            up = jax.jit(
                lambda k: estimators.reverse_ais_upper_bound(
                    k, _exact_draw, log_prior, log_lik, BETAS, blackjax.hmc, R, **kw
                )
            )(jax.random.fold_in(key, 1))
            return np.asarray(lo), np.asarray(up)
        lo = jax.jit(lambda k: estimators.smc_lower_bound(k, lambda kk: _run(kk, n), R))(key)
        up = jax.jit(
            lambda k: estimators.csmc_upper_bound(k, lambda kk, ref: _run(kk, n, ref), _ref, R)
        )(jax.random.fold_in(key, 1))
        return np.asarray(lo), np.asarray(up)


def test_ais_estimators_are_one_particle_smc():
    """Shared randomness: ais_lower_bound = tempering.run with N = 1 (same keys), and reverse
    AIS = conditional SMC with one particle clamped to the same backward path."""
    kw = dict(kernel_params=PARAMS)

    def both(key):
        a = estimators.ais_lower_bound(
            key, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, 4, **kw
        )
        b = estimators.smc_lower_bound(key, lambda k: _run(k, 1, ess_threshold=0.0), 4)
        up = estimators.reverse_ais_upper_bound(
            key, _exact_draw, log_prior, log_lik, BETAS, blackjax.hmc, 4, **kw
        )

        def csmc(k):
            k1, k2 = jax.random.split(k)
            ref = tempering.reference_path(
                k2, _exact_draw(k1), log_prior, log_lik, BETAS, blackjax.hmc, **kw
            )
            return _run(jax.random.key(0), 1, ref).log_Z

        return a, b, up, jax.vmap(csmc)(jax.random.split(key, 4))

    with jax.enable_x64(True):
        a, b, up, cs = jax.jit(both)(jax.random.key(3))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(up, cs, rtol=1e-10)


@pytest.mark.parametrize("n", [1, 16])
def test_bounds_bracket_log_Z(n):
    lo, up = _bounds(n)
    s = estimators.summarize(lo, up, alpha=0.01)
    # unbiasedness of Z_hat and 1/Z_hat: delta-method z-scores
    assert abs((s.unbiased_from_lower - LOG_Z) / s.unbiased_from_lower_se) < 4  # z-score
    assert abs((s.unbiased_from_upper - LOG_Z) / s.unbiased_from_upper_se) < 4  # z-score
    # distribution-free bracketing (Markov + union bound), alpha = 0.01
    assert s.max_lower_threshold <= LOG_Z <= s.min_upper_threshold
    # sandwich of the means
    se = lambda x: x.std(ddof=1) / np.sqrt(x.size)
    assert lo.mean() < LOG_Z + 4 * se(lo)  # z-score
    assert up.mean() > LOG_Z - 4 * se(up)  # z-score


def test_bounds_tighten_with_particles():
    """E[L_N] non-decreasing and E[U_N] non-increasing along N = 1, 4, 16 (fixed schedule);
    each consecutive difference must not be significantly negative (z-scores, R = 96 runs)."""
    sizes = (1, 4, 16)
    b = {n: _bounds(n) for n in sizes}
    se = lambda a, c: np.sqrt(a.var(ddof=1) / a.size + c.var(ddof=1) / c.size)  # noqa: E731
    for m, n in zip(sizes[:-1], sizes[1:], strict=True):
        (lm, um), (ln, un) = b[m], b[n]
        assert (ln.mean() - lm.mean()) / se(lm, ln) > -4  # z-score: lower non-decreasing
        assert (um.mean() - un.mean()) / se(um, un) > -4  # z-score: upper non-increasing
        # the gap shrinks significantly: the checks above have power
        assert ((um - lm).mean() - (un - ln).mean()) / se(um - lm, un - ln) > 3  # z-score


def test_csmc_one_particle_is_reverse_ais():
    with jax.enable_x64(True):
        ref = _ref(jax.random.key(5))
        res = jax.jit(lambda k: _run(k, 1, ref))(jax.random.key(6))
        # reverse AIS along the backward chain: sum_t (beta_t - beta_{t-1}) log L(x_t)
        ll = jax.vmap(log_lik)(ref)
        rais = np.sum(np.diff(BETAS) * np.asarray(ll[1:]))
        np.testing.assert_allclose(float(res.log_Z), rais, rtol=1e-10)
        assert res.particles.shape == (1, D)
        np.testing.assert_allclose(res.particles[0], ref[-1])


def test_adaptive_schedule_hits_target_cess_and_freezes():
    """Asymmetric likelihood (y shifted on one side): with resampling at every step the ESS
    after each adaptive reweighting is exactly target * N (a sign error in the increment,
    invisible with symmetric targets, would miss it), and the frozen schedule drives run()."""
    pilot = jax.jit(
        lambda k: tempering.adaptive(
            k,
            sample_prior,
            log_prior,
            log_lik,
            blackjax.hmc,
            64,
            kernel_params=PARAMS,
            target_ess=0.5,
            ess_threshold=1.0,
        )
    )(jax.random.key(0))
    k = int(pilot.num_steps)
    betas = annealing.freeze(pilot.betas, k)
    assert 2 <= k < 50 and betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)
    np.testing.assert_allclose(np.asarray(pilot.ess[: k - 1]) / 64, 0.5, rtol=1e-3)
    assert float(pilot.ess[k - 1]) / 64 >= 0.5 - 1e-3  # the last step is clipped to beta = 1
    res = jax.jit(lambda kk: _run(kk, 32, betas=betas))(jax.random.key(1))
    assert res.ess.shape == (k + 1,) and np.isfinite(float(res.log_Z))


def _moves():
    from kernels import orbital
    from kernels.involutive import hmc, mala, rwm

    imm = np.ones(D)
    return {
        "blackjax.mala": (blackjax.mala, dict(step_size=0.1)),
        "kernels.involutive.hmc": (hmc, PARAMS),
        "kernels.involutive.mala": (mala, dict(step_size=0.1, inverse_mass_matrix=imm)),
        "kernels.involutive.rwm": (rwm, dict(scale=0.5, inverse_mass_matrix=imm)),
        "kernels.orbital": (orbital, dict(step_size=0.3, inverse_mass_matrix=imm, period=4)),
    }


@pytest.mark.parametrize(
    "name",
    [
        n
        if n in ("kernels.involutive.hmc", "kernels.orbital")
        else pytest.param(n, marks=pytest.mark.slow)
        for n in _moves()
    ],
)
def test_moves_from_kernels_and_blackjax(name):
    """Any BlackJAX-contract kernel is a valid move: log-mean-exp of R = 32 runs matches
    log Z (delta-method z-score)."""
    kernel, params = _moves()[name]
    with jax.enable_x64(True):
        lz = jax.jit(
            jax.vmap(
                lambda k: (
                    tempering.run(
                        k,
                        sample_prior,
                        log_prior,
                        log_lik,
                        BETAS,
                        kernel,
                        32,
                        kernel_params=params,
                        num_mcmc_steps=2,
                    ).log_Z
                )
            )
        )(jax.random.split(jax.random.key(8), 32))
    w = np.exp(np.asarray(lz) - LOG_Z)
    assert abs(np.log(w.mean()) / (w.std(ddof=1) / np.sqrt(w.size) / w.mean())) < 4  # z-score


def test_errors():
    with pytest.raises(TypeError, match="build_kernel"):
        _run_bad = tempering.run(
            jax.random.key(0), sample_prior, log_prior, log_lik, BETAS, object(), 4
        )
        del _run_bad
    with pytest.raises(ValueError, match="1-d schedule"):
        tempering.run(jax.random.key(0), sample_prior, log_prior, log_lik, [1.0], blackjax.hmc, 4)
    with pytest.raises(ValueError, match="strictly"):
        annealing.freeze([0.0, 0.5, 0.4, 1.0])


def test_q_path_unbiased():
    """Tempered SMC along a power-mean q-path (q = 0.5) is unbiased for the same Z."""
    with jax.enable_x64(True):
        path = annealing.q_path(0.5)

        def one(k):
            return tempering.run(
                k,
                sample_prior,
                log_prior,
                log_lik,
                annealing.sigmoid(10),
                blackjax.hmc,
                32,
                kernel_params=PARAMS,
                path=path,
            ).log_Z

        lz = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(9), 64)))
        e = np.exp(lz - LOG_Z)
        assert abs((e.mean() - 1) / (e.std(ddof=1) / np.sqrt(e.size))) < 4  # z-score


# Regression: numbers of tempering.run / reference_path / adaptive before they became scans of
# kernels.smc.base.step, captured with these seeds (float64, 5 linear steps, HMC); the rewrite
# reproduces them bitwise on CPU (tolerances allow only float rounding).
_BEFORE = {
    "temp": {
        "log_Z": -4.872603314449583,
        "incs": [0.0, -1.8730211337580889, -1.0686745355393943, -0.7732035963149426,
                 -0.6385761552935074, -0.5191278935436494],
        "ess": [15.999999999999998, 5.582117172385978, 10.98598467313397, 8.179083836440903,
                6.158106669487644, 14.995109559087009],
        "resampled": [0, 1, 0, 0, 1],
        "anc_sum": [120, 125, 120, 120, 136],
        "x": [1.0823713630062912, -0.9378547440400172, 1.4532666097449982, -0.8566903259999376],
        "lw": [-3.1491905638592117, -2.7902527509287163, -2.8350395508033452, -2.553229814519238],
    },
    "refpath": [0.03942503187527322, -0.3134213059620123, 0.9127942377011942,
                -0.1771217820890646, 1.593533595738253, -0.166328938155443, 1.5354720780193811,
                -0.6572428246328937, 1.9675541820230689, -0.8941366083247941, 2.0, -0.8],
    "temp_csmc": {
        "log_Z": -5.183738174612133,
        "incs": [0.0, -2.5917161254137193, -0.9863702959774965, -0.7354396402544414,
                 -0.49167851765187476, -0.3785335953146014],
        "ess": [15.999999999999998, 6.40953777981789, 11.931167864294459, 11.45846696141,
                9.290561511372557, 8.780467530094215],
        "resampled": [0, 1, 0, 0, 0],
        "anc_sum": [120, 110, 120, 120, 120],
        "x": [2.0, -0.8, 2.038354100799514, -1.0828585356011793],
        "lw": [-1.8015092299674282, -2.004591886733639, -6.670064366548834, -4.734847918033504],
    },
    "adaptive": {
        "log_Z": -4.2785888059187895,
        "num_steps": 4,
        "betas": [0.0, 0.10998957909760065, 0.3227284713247218, 0.6560302335639447, 1.0],
        "ess": [9.600000000028377, 5.386735074737731, 9.600000000001932, 9.055816027140128],
        "x": [2.4515493538019797, -0.7502898627172391, 3.1355698517028205, -1.619895433266513],
        "lw": [-2.2869748562783725, -5.142419978372623, -4.299003231096861, -3.6544714924789643],
    },
    "temp_f32": {
        "log_Z": -5.272056579589844,
        "incs": [0.0, -2.607640266418457, -0.9182255268096924, -0.834169864654541,
                 -0.4038217067718506, -0.5081989765167236],
        "ess": [16.0, 6.092316627502441, 12.126206398010254, 12.964444160461426,
                10.634590148925781, 9.856842041015625],
        "resampled": [0, 1, 0, 0, 0],
        "anc_sum": [120, 124, 120, 120, 120],
        "x": [1.6375693082809448, -0.8354000449180603, 2.6656994819641113, -1.9357515573501587],
        "lw": [-2.3222129344940186, -6.022772789001465, -2.5918619632720947, -3.062551736831665],
    },
}  # fmt: skip


def test_same_numbers_as_before_the_step_api():
    """Same keys, same numbers as before tempering.run and adaptive became scans of base.step:
    fixed-schedule SMC, the reverse reference path, conditional SMC on it, the adaptive pilot
    (float64) and fixed-schedule SMC in float32."""
    betas = annealing.linear(5)
    kw = dict(kernel_params=PARAMS)

    def run(k, **more):
        return tempering.run(
            k, sample_prior, log_prior, log_lik, betas, blackjax.hmc, 16, **kw, **more
        )

    with jax.enable_x64(True):
        res = jax.jit(lambda k: run(k, num_mcmc_steps=2))(jax.random.key(21))
        assert_matches_before(res, _BEFORE["temp"], 1e-10)
        x_K = jnp.array([2.0, -0.8])
        ref = jax.jit(
            lambda k: tempering.reference_path(
                k, x_K, log_prior, log_lik, betas, blackjax.hmc, **kw
            )
        )(jax.random.key(22))
        np.testing.assert_allclose(np.asarray(ref).reshape(-1), _BEFORE["refpath"], rtol=1e-10)
        res = jax.jit(lambda k: run(k, reference=ref))(jax.random.key(23))
        assert_matches_before(res, _BEFORE["temp_csmc"], 1e-10)
        a = jax.jit(
            lambda k: tempering.adaptive(
                k, sample_prior, log_prior, log_lik, blackjax.hmc, 16, target_ess=0.6, **kw
            )
        )(jax.random.key(24))
        b = _BEFORE["adaptive"]
        assert int(a.num_steps) == b["num_steps"]
        k = b["num_steps"]
        np.testing.assert_allclose(float(a.log_Z), b["log_Z"], rtol=1e-10)
        np.testing.assert_allclose(a.betas[: k + 1], b["betas"], rtol=1e-10)
        np.testing.assert_allclose(a.ess[:k], b["ess"], rtol=1e-10)
        np.testing.assert_allclose(np.asarray(a.particles).reshape(-1)[:4], b["x"], rtol=1e-10)
        np.testing.assert_allclose(a.log_weights[:4], b["lw"], rtol=1e-10)
    res = jax.jit(run)(jax.random.key(21))
    assert_matches_before(res, _BEFORE["temp_f32"], 1e-5)


class _RecordState(typing.NamedTuple):
    position: jax.Array
    logdensity: jax.Array


class _Record:
    """Not an MCMC kernel: a step that sets the position to its ``value`` parameter, so the
    parameters each move received can be read off the particles (alignment check only)."""

    @staticmethod
    def init(position, logdensity_fn):
        return _RecordState(position, logdensity_fn(position))

    @staticmethod
    def build_kernel():
        def step(key, state, logdensity_fn, value, offset):
            x = jnp.broadcast_to(value + offset, state.position.shape)
            return _RecordState(x, logdensity_fn(x)), {"value": value}

        return step


def test_per_temperature_params_are_aligned_forward_and_backward():
    """Move t (at beta_{t-1}) gets entry t - 1 forward; the reverse chain's move from x_t to
    x_{t-1} gets the same entry; per-particle entries combine as [K, N]; update_info keeps
    every move's info."""
    k, n = BETAS.shape[0] - 1, 4
    value = 10.0 * jnp.arange(k)
    offset = jnp.broadcast_to(jnp.arange(n)[None, :] / 100, (k, n))
    params = dict(value=value, offset=offset)
    res = tempering.run(
        jax.random.key(0), sample_prior, log_prior, log_lik, BETAS, _Record, n,
        kernel_params=params, ess_threshold=0.0, per_temperature_params=("value", "offset"),
        per_particle_params=("offset",), return_update_info=True,
    )
    np.testing.assert_allclose(res.particles[:, 0], value[-1] + np.arange(n) / 100, rtol=1e-6)
    assert res.update_info["value"].shape == (k, n, 1)
    np.testing.assert_allclose(res.update_info["value"][:, 0, 0], value)
    ref = tempering.reference_path(
        jax.random.key(1), jnp.full(D, -1.0), log_prior, log_lik, BETAS, _Record,
        kernel_params=dict(value=value, offset=0.0), per_temperature_params=("value",),
    )
    assert ref.shape == (k + 1, D)
    np.testing.assert_allclose(ref[:-1, 0], value)  # x_{t-1} from the move of step t
    np.testing.assert_allclose(ref[-1], -1.0)
    # a forward run that keeps its prior draws at step 1: x_0 = x_1, entry 0 unused
    ref = tempering.reference_path(
        jax.random.key(1), jnp.full(D, -1.0), log_prior, log_lik, BETAS, _Record,
        kernel_params=dict(value=value, offset=0.0), per_temperature_params=("value",),
        identity_first_move=True,
    )
    assert ref.shape == (k + 1, D)
    np.testing.assert_allclose(ref[1:-1, 0], value[1:])
    np.testing.assert_allclose(ref[0], ref[1])
    one = tempering.reference_path(
        jax.random.key(1), jnp.full(D, -1.0), log_prior, log_lik, BETAS[::k], _Record,
        kernel_params=dict(value=value[:1], offset=0.0), per_temperature_params=("value",),
        identity_first_move=True,
    )
    np.testing.assert_allclose(one, -np.ones((2, D)))  # K = 1: no move at all
    assert _run(jax.random.key(0), 4).update_info is None  # opt-in


def test_per_temperature_step_sizes_bracket_log_Z():
    """HMC step sizes shrinking with beta (the posterior is narrower), the same per-temperature
    parameters forward and backward: the bounds bracket the closed form and their means are
    unbiased (z < 4, R = 96 runs of N = 8)."""
    k = BETAS.shape[0] - 1
    params = dict(PARAMS, step_size=jnp.linspace(0.8, 0.3, k))
    kw = dict(kernel_params=params, per_temperature_params=("step_size",))

    def lo(key):
        return tempering.run(
            key, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, 8, **kw
        ).log_Z

    def up(key):
        k1, k2, k3 = jax.random.split(key, 3)
        ref = tempering.reference_path(
            k2, _exact_draw(k1), log_prior, log_lik, BETAS, blackjax.hmc, **kw
        )
        return tempering.run(
            k3, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, 8, reference=ref, **kw
        ).log_Z

    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(11), R)
        lows = np.asarray(jax.jit(jax.vmap(lo))(keys))
        ups = np.asarray(jax.jit(jax.vmap(up))(jax.random.split(jax.random.key(12), R)))
    s = estimators.summarize(lows, ups, alpha=0.01)
    assert abs((s.unbiased_from_lower - LOG_Z) / s.unbiased_from_lower_se) < 4  # z-score
    assert abs((s.unbiased_from_upper - LOG_Z) / s.unbiased_from_upper_se) < 4  # z-score
    assert s.max_lower_threshold <= LOG_Z <= s.min_upper_threshold
    with pytest.raises(ValueError, match="leading axis of K = 8"):
        tempering.run(jax.random.key(0), sample_prior, log_prior, log_lik, BETAS,
                      blackjax.hmc, 8, kernel_params=PARAMS,
                      per_temperature_params=("step_size",))
    with pytest.raises(ValueError, match="not in kernel_params"):
        tempering.reference_path(jax.random.key(0), jnp.zeros(D), log_prior, log_lik, BETAS,
                                 blackjax.hmc, kernel_params=PARAMS,
                                 per_temperature_params=("nope",))
