import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from kernels.smc import resampling, sequential

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
