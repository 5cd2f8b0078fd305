"""The SMC step API (kernels.smc.base): user loops equal the drivers, the info carries the move's
info, per-particle move parameters, and log Z / 1 / Z unbiased on a linear-Gaussian target."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import kernels.smc as smc
from kernels.smc import base, sequential, tempering
from tests.kernels.smc._gaussian import (
    BETAS,
    LOG_Z,
    PARAMS,
    POST_MEAN,
    POST_SD,
    D,
    log_lik,
    log_prior,
    sample_prior,
)


def _init(k, n):
    return jax.random.normal(k, (n,))


def _prop(k, x, t):
    return 0.9 * x + jax.random.normal(k, x.shape)


def _log_g(xp, x, t):
    return norm.logpdf(0.3 * t, x, 0.7)


def test_public_names():
    assert smc.step is base.step and smc.init is base.init
    assert smc.SMCState is base.SMCState and smc.SMCInfo is base.SMCInfo
    assert sequential.resample is base.resample and sequential.gather is base.gather
    assert set(base.SMCInfo._fields) == {
        "ancestors",
        "resampled",
        "log_Z_increment",
        "ess",
        "update_info",
    }


@pytest.mark.parametrize("conditional", [False, True])
def test_python_loop_over_step_equals_run(conditional):
    """A user-written Python loop over step (same keys as run) gives run's numbers exactly."""
    T, N = 5, 16
    key = jax.random.key(3)
    reference = jnp.linspace(-1.0, 1.0, T + 1) if conditional else None
    res = sequential.run(key, _init, _prop, _log_g, T, N, reference=reference)

    k_init, k_steps = jax.random.split(key)  # run's key layout
    x0 = _init(jax.random.split(k_init)[0], N)
    if conditional:
        x0 = base.clamp_first(x0, reference[0])
    state = base.init(x0)
    incs, anc, did = [state.log_Z], [], []
    for t, k in zip(range(1, T + 1), jax.random.split(k_steps, T), strict=True):

        def move(kk, x, params, t=t):
            return _prop(kk, x, t), ()

        def weight(xp, x, t=t):
            return _log_g(xp, x, t)

        ref_t = None if reference is None else reference[t]
        state, info = base.step(k, state, move, weight, reference=ref_t)  # eager
        incs.append(info.log_Z_increment)
        anc.append(info.ancestors)
        did.append(info.resampled)
    np.testing.assert_allclose(state.particles, res.particles, rtol=1e-6)
    np.testing.assert_allclose(state.log_weights, res.log_weights, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.array(incs), res.log_Z_increments, rtol=1e-6)
    np.testing.assert_allclose(float(state.log_Z), float(res.log_Z), rtol=1e-6)
    np.testing.assert_array_equal(np.array(anc), res.ancestors)
    np.testing.assert_array_equal(np.array(did), res.resampled)
    if conditional:
        assert np.all(res.ancestors[:, 0] == 0) and float(state.particles[0]) == 1.0


def test_tempering_loop_over_step_equals_run_with_move_info():
    """A user loop over step with tempering.tempered_move = tempering.run; the SMCInfo carries
    the HMC kernel's own infos, ``[N, num_mcmc_steps]``."""
    N, M = 8, 2
    key = jax.random.key(5)
    with jax.enable_x64(True):
        res = tempering.run(
            key, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, N,
            kernel_params=PARAMS, num_mcmc_steps=M,
        )  # fmt: skip

        @jax.jit
        def loop(key):
            k_init, k_steps = jax.random.split(key)
            x0 = jax.vmap(sample_prior)(jax.random.split(jax.random.split(k_init)[0], N))
            state = base.init(x0)
            accs = []
            for t, k in enumerate(jax.random.split(k_steps, len(BETAS) - 1), start=1):
                b0, b1 = BETAS[t - 1], BETAS[t]
                move = tempering.tempered_move(
                    blackjax.hmc, lambda x, b=b0: log_prior(x) + b * log_lik(x), M
                )
                weight = lambda xp, x, b0=b0, b1=b1: (b1 - b0) * jax.vmap(log_lik)(x)  # noqa: E731
                state, info = base.step(k, state, move, weight, move_params=PARAMS)
                accs.append(info.update_info.acceptance_rate)
            return state, jnp.stack(accs)

        state, accs = loop(key)
    np.testing.assert_allclose(state.particles, res.particles, rtol=1e-10)
    np.testing.assert_allclose(float(state.log_Z), float(res.log_Z), rtol=1e-10)
    assert accs.shape == (len(BETAS) - 1, N, M)
    assert 0.3 < float(np.mean(np.asarray(accs))) <= 1.0


def test_per_particle_move_parameters():
    """Per-particle parameters are vmapped: equal per-particle values reproduce the shared run
    exactly, a zero scale leaves exactly those particles in place, and a wrong leading axis is a
    clear error."""
    N = 6

    def rw(k, x, scale):
        return x + scale * jax.random.normal(k, x.shape), jnp.abs(scale)

    state = base.init(jnp.arange(N, dtype=jnp.float32))
    weight = lambda xp, x: jnp.zeros(N)  # noqa: E731
    key = jax.random.key(0)
    shared, info_s = base.step(key, state, base.vmap_move(rw), weight, move_params=0.7)
    per, info_p = base.step(key, state, base.vmap_move(rw, 0), weight, move_params=jnp.full(N, 0.7))
    np.testing.assert_array_equal(shared.particles, per.particles)
    scales = jnp.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    moved, info = base.step(
        key, state, base.vmap_move(rw, 0), weight, move_params=scales, ess_threshold=0.0
    )
    np.testing.assert_array_equal(moved.particles[::2], state.particles[::2])
    assert np.all(moved.particles[1::2] != state.particles[1::2])
    np.testing.assert_array_equal(info.update_info, scales)  # the move's own info, per particle
    with pytest.raises(ValueError, match=r"leading axis num_particles=6, got shape \(5,\)"):
        base.step(key, state, base.vmap_move(rw, 0), weight, move_params=jnp.ones(5))
    with pytest.raises(ValueError, match=r"\['scale'\].*leading axis num_particles=6"):
        base.step(
            key,
            state,
            base.vmap_move(lambda k, x, p: rw(k, x, p["scale"]), {"scale": 0, "other": None}),
            weight,
            move_params={"scale": jnp.ones(3), "other": 1.0},
        )


def test_tempering_per_particle_step_sizes():
    """tempering.run with one HMC step size per particle: equal values give the shared run;
    a typo in per_particle_params is an error naming it."""
    N = 8
    key = jax.random.key(2)
    kw = dict(kernel_params=PARAMS, num_mcmc_steps=1)
    a = tempering.run(key, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, N, **kw)
    per = dict(PARAMS, step_size=jnp.full(N, 0.4))
    b = tempering.run(
        key, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, N,
        kernel_params=per, per_particle_params=("step_size",),
    )  # fmt: skip
    np.testing.assert_allclose(a.particles, b.particles, rtol=1e-6)
    np.testing.assert_allclose(float(a.log_Z), float(b.log_Z), rtol=1e-6)
    c = tempering.adaptive(
        key, sample_prior, log_prior, log_lik, blackjax.hmc, N,
        kernel_params=per, per_particle_params=("step_size",),
    )  # fmt: skip
    d = tempering.adaptive(key, sample_prior, log_prior, log_lik, blackjax.hmc, N, **kw)
    np.testing.assert_allclose(c.betas, d.betas, rtol=1e-6)
    with pytest.raises(ValueError, match=r"per_particle_params names \['stepsize'\]"):
        tempering.run(
            key, sample_prior, log_prior, log_lik, BETAS, blackjax.hmc, N,
            kernel_params=per, per_particle_params=("stepsize",),
        )  # fmt: skip


def test_step_errors():
    state = base.init(jnp.zeros(4))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"move_fn must return \(particles, update_info\)"):
        base.step(key, state, lambda k, x, p: x, lambda xp, x: jnp.zeros(4))
    with pytest.raises(ValueError, match="fused move"):
        base.step(key, state, lambda k, x, p: (x, ()), None)
    with pytest.raises(ValueError, match=r"shape \(num_particles,\) = \(4,\), got \(\)"):
        base.step(key, state, lambda k, x, p: (x, ()), lambda xp, x: x.sum())
    with pytest.raises(ValueError, match="leading axis num_particles=4"):
        base.step(key, state, lambda k, x, p: (x[:3], ()), lambda xp, x: jnp.zeros(4))
    with pytest.raises(ValueError, match=r"got \(3,\)"):
        base.init(jnp.zeros(4), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"one shared leading axis.*\[\(4,\), \(3, 2\)\]"):
        base.init({"a": jnp.zeros(4), "b": jnp.zeros((3, 2))})


def _tempered_scan(key, n, reference=None):
    """Tempered SMC as a jitted scan of step; HMC with a different step size per particle."""
    k_init, k_steps, k_eps = jax.random.split(key, 3)
    x0 = jax.vmap(sample_prior)(jax.random.split(k_init, n))
    if reference is not None:
        x0 = base.clamp_first(x0, reference[0])
    params = dict(PARAMS, step_size=jax.random.uniform(k_eps, (n,), minval=0.2, maxval=0.5))
    betas = jnp.asarray(BETAS)

    def body(state, inp):
        k, t = inp
        move = tempering.tempered_move(
            blackjax.hmc, lambda x: log_prior(x) + betas[t - 1] * log_lik(x), 1, ("step_size",)
        )

        def weight(xp, x):
            return (betas[t] - betas[t - 1]) * jax.vmap(log_lik)(x)

        ref_t = None if reference is None else jax.tree.map(lambda r: r[t], reference)
        state, info = base.step(k, state, move, weight, move_params=params, reference=ref_t)
        return state, info.update_info.acceptance_rate

    ts = jnp.arange(1, len(BETAS))
    state, acc = jax.lax.scan(body, base.init(x0), (jax.random.split(k_steps, ts.size), ts))
    return state.log_Z, acc.mean()


def test_step_api_log_Z_against_closed_form():
    """R = 200 runs of tempered SMC written as a scan of step (N = 16, per-particle HMC step
    sizes): E[Z_hat] = Z and, with a reverse-chain reference from an exact posterior draw
    (conditional SMC), E[1 / Z_hat] = 1 / Z; both z < 4 (z-scores from the runs' spread)."""
    R, N = 200, 16

    def upper(k):
        k1, k2, k3 = jax.random.split(k, 3)
        x = POST_MEAN + POST_SD * jax.random.normal(k1, (D,))
        ref = tempering.reference_path(
            k2, x, log_prior, log_lik, BETAS, blackjax.hmc, kernel_params=PARAMS
        )
        return _tempered_scan(k3, N, ref)

    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(7), R)
        lo, acc = jax.jit(jax.vmap(lambda k: _tempered_scan(k, N)))(keys)
        up, _ = jax.jit(jax.vmap(upper))(jax.random.split(jax.random.key(8), R))
        lo, up, acc = np.asarray(lo), np.asarray(up), np.asarray(acc)
    w = np.exp(lo - LOG_Z)
    assert abs((w.mean() - 1) / (w.std(ddof=1) / np.sqrt(R))) < 4  # z-score: E[Z_hat / Z] = 1
    v = np.exp(LOG_Z - up)
    assert abs((v.mean() - 1) / (v.std(ddof=1) / np.sqrt(R))) < 4  # z-score: E[Z / Z_hat] = 1
    # the bounds sandwich log Z (means, z-scores) and the moves do move
    se = lambda a: a.std(ddof=1) / np.sqrt(a.size)  # noqa: E731
    assert lo.mean() < LOG_Z + 4 * se(lo)  # z-score
    assert up.mean() > LOG_Z - 4 * se(up)  # z-score
    assert 0.5 < float(acc.mean()) < 1.0
