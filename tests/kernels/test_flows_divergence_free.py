"""kernels.flows.divergence_free: the general split-flow sampler, HMC as its Hamiltonian case.

Exactness: div(p v) = 0 of the fields, T_-h = T_h^-1, leapfrog recovered step by step, the same
chain as kernels.orbital.multinomial_hmc from the same keys, constant orbit weights for exact
p-preserving sub-flows. Statistics: moments against closed form and against blackjax.hmc, with
z-scores from independent chains.
"""

import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.mcmc import integrators, metrics
from jax.scipy.stats import norm

import kernels.flows as fl
import kernels.orbital as orb

DIM = 3
_A = np.random.default_rng(0).normal(size=(DIM, DIM))
COV = _A @ _A.T / DIM + np.diag([0.5, 1.0, 1.5])
MEAN = np.array([0.5, -1.0, 2.0])
PREC = np.linalg.inv(COV)


def gauss(x):
    d = x - MEAN
    return -0.5 * d @ PREC @ d


def banana(x):
    return -0.5 * x[0] ** 2 - 0.5 * (x[1] - 0.5 * x[0] ** 2) ** 2


def gauss_conditionals():
    """p(x_i | x_-i) = N(MEAN_i - sum_{j != i} PREC_ij (x_j - MEAN_j) / PREC_ii, 1 / PREC_ii)."""
    prec, mean = jnp.asarray(PREC), jnp.asarray(MEAN)

    def moments(x, i):
        d = (x - mean).at[i].set(0.0)
        return mean[i] - prec[i] @ d / prec[i, i], 1.0 / jnp.sqrt(prec[i, i])

    def cdf(x, i):
        m, s = moments(x, i)
        return norm.cdf(x[i], m, s)

    def icdf(u, x, i):
        m, s = moments(x, i)
        return m + s * jax.scipy.special.ndtri(u)

    def logpdf(x, i):
        m, s = moments(x, i)
        return norm.logpdf(x[i], m, s)

    return fl.Conditionals(cdf, icdf, logpdf)


# ------------------------------------------------------------------------------ exactness
def test_fields_are_divergence_free():
    """div(p v)/p = 0 for the Hamiltonian field and the deterministic-Gibbs field; a gradient
    field (v = grad log p) is not, so the check can fail."""
    with jax.enable_x64(True):
        ham = fl.hamiltonian_flow(banana, jnp.array([1.0, 2.0]))
        cond = gauss_conditionals()
        speed = jnp.array([0.7, 1.1, 1.3])

        def gibbs_velocity(x):
            i = jnp.arange(DIM)
            return speed * jnp.exp(-jax.vmap(cond.logpdf, (None, 0))(x, i))

        div_ham = jax.jit(jax.vmap(lambda z: fl.divergence(ham.logdensity_fn, ham.velocity_fn, z)))
        div_gibbs = jax.jit(jax.vmap(lambda x: fl.divergence(gauss, gibbs_velocity, x)))
        div_grad = jax.jit(jax.vmap(lambda x: fl.divergence(gauss, jax.grad(gauss), x)))
        rng = np.random.default_rng(1)
        z = {
            "position": jnp.asarray(rng.normal(size=(20, 2))),
            "momentum": rng.normal(size=(20, 2)),
        }
        x = jnp.asarray(MEAN + rng.normal(size=(20, DIM)))
        assert np.all(np.abs(np.asarray(div_ham(z))) < 1e-10)
        assert np.all(np.abs(np.asarray(div_gibbs(x))) < 1e-9)
        assert np.all(np.abs(np.asarray(div_grad(x))) > 1e-2)


def test_flow_map_is_leapfrog_and_its_own_inverse():
    with jax.enable_x64(True):
        imm = jnp.array([0.5, 2.0])
        ham = fl.hamiltonian_flow(banana, imm)
        step = fl.flow_map(ham.sub_flows, 0.3)
        metric = metrics.default_metric(imm)
        leapfrog = integrators.velocity_verlet(banana, metric.kinetic_energy)
        q, p = jnp.array([0.3, -1.2]), jnp.array([1.0, 0.4])
        z, ld = step({"position": q, "momentum": p}, 1.0)
        ref = leapfrog(integrators.IntegratorState(q, p, *jax.value_and_grad(banana)(q)), 0.3)
        np.testing.assert_allclose(z["position"], ref.position, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(z["momentum"], ref.momentum, rtol=1e-14, atol=1e-14)
        back, ld_back = step(z, -1.0)
        np.testing.assert_allclose(back["position"], q, atol=1e-13)
        np.testing.assert_allclose(back["momentum"], p, atol=1e-13)
        assert float(ld) == 0.0 and float(ld_back) == 0.0


def test_hamiltonian_case_is_multinomial_hmc():
    """The same keys give the same chain as kernels.orbital.multinomial_hmc (float64)."""
    with jax.enable_x64(True):
        imm = jnp.array([1.0, 0.5])
        ham = fl.hamiltonian_flow(banana, imm)
        ours = fl.divergence_free_flow(ham.logdensity_fn, ham.sub_flows, 0.4, 5, ham.refresh_fn)
        hmc = orb.multinomial_hmc(banana, 0.4, imm, 5)
        keys = jax.random.split(jax.random.key(3), 200)
        q0 = jnp.array([0.5, 0.5])

        def run(alg, state, get):
            def body(s, k):
                s, _ = alg.step(k, s)
                return s, get(s)

            return jax.jit(lambda s: jax.lax.scan(body, s, keys)[1])(state)

        a = run(ours, ours.init(ham.init(q0)), lambda s: s.position["position"])
        b = run(hmc, hmc.init(q0), lambda s: s.position)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9)
        assert np.unique(np.asarray(a)[:, 0]).size > 150  # the chain moves


def test_exact_sub_flows_give_constant_weights():
    """Deterministic-Gibbs rotations through the general sampler: p(T^m x)|det J| = p(x), so all
    orbit weights are equal (float64, 1e-9) and acceptance is 1."""
    with jax.enable_x64(True):
        subs = fl.gibbs_sub_flows(gauss_conditionals(), jnp.array([0.7, 1.1, 1.3]))
        alg = fl.divergence_free_flow(gauss, subs, 0.37, 6)
        state = alg.init(jnp.asarray(MEAN + 0.3))
        for key in jax.random.split(jax.random.key(0), 5):
            state, info = jax.jit(alg.step)(key, state)
            lw = np.asarray(info.log_weights)
            np.testing.assert_allclose(lw - lw.max(), 0.0, atol=1e-9)
            np.testing.assert_allclose(float(info.acceptance_rate), 1.0, atol=1e-9)


# ------------------------------------------------------------------------------ statistics
CHAINS, STEPS, BURN = 128, 400, 50


def _chain_means(alg, init_fn, key, get=lambda s: s.position):
    """Per-chain averages of x and (x - MEAN)^2, shape (chains, 2, dim)."""
    x0 = jnp.asarray(MEAN + np.random.default_rng(2).normal(size=(CHAINS, DIM)))

    def one(key, x):
        def body(s, k):
            s, _ = alg.step(k, s)
            return s, get(s)

        xs = jax.lax.scan(body, alg.init(init_fn(x)), jax.random.split(key, STEPS))[1][BURN:]
        return jnp.stack([xs.mean(0), ((xs - MEAN) ** 2).mean(0)])

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, CHAINS), x0))


@functools.cache
def _runs():
    ham = fl.hamiltonian_flow(gauss, jnp.ones(DIM))
    ours = fl.divergence_free_flow(
        ham.logdensity_fn, ham.sub_flows, 0.35, 6, ham.refresh_fn, rotation=0.5
    )
    theirs = blackjax.hmc(gauss, 0.35, jnp.ones(DIM), num_integration_steps=3)
    a = _chain_means(ours, ham.init, jax.random.key(4), lambda s: s.position["position"])
    b = _chain_means(theirs, lambda x: x, jax.random.key(5))
    return a, b


def test_hamiltonian_flow_moments_match_closed_form():
    ours, _ = _runs()
    truth = np.stack([MEAN, np.diag(COV)])
    z = (ours.mean(0) - truth) / (ours.std(0, ddof=1) / np.sqrt(CHAINS))
    assert np.all(np.abs(z) < 4), z  # z-score


def test_hamiltonian_flow_agrees_with_blackjax_hmc():
    """Two-sample z-scores of the per-chain averages: the general flow sampler with the
    Hamiltonian field and blackjax.hmc estimate the same moments."""
    ours, theirs = _runs()
    se = np.sqrt(ours.var(0, ddof=1) / CHAINS + theirs.var(0, ddof=1) / CHAINS)
    z = (ours.mean(0) - theirs.mean(0)) / se
    assert np.all(np.abs(z) < 4), z  # z-score


# ------------------------------------------------------------------------------ errors
def test_errors():
    ham = fl.hamiltonian_flow(gauss, jnp.ones(DIM))
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        fl.divergence_free_flow(ham.logdensity_fn, ham.sub_flows, 0.1, 0)
    with pytest.raises(ValueError, match="step_size must be positive"):
        fl.divergence_free_flow(ham.logdensity_fn, ham.sub_flows, -0.1, 3)
    with pytest.raises(ValueError, match="at least one sub-flow"):
        fl.flow_map([], 0.1)
    with pytest.raises(ValueError, match="needs Conditionals.logpdf"):
        cond = gauss_conditionals()
        fl.gibbs_sub_flows(fl.Conditionals(cond.cdf, cond.icdf), jnp.ones(DIM))
    alg = fl.divergence_free_flow(lambda z: jnp.log(z[0]), [fl.shear(0, lambda z: z[1])], 0.1, 2)
    with pytest.raises(ValueError, match="not finite at the initial state"):
        alg.init(jnp.array([-1.0, 0.0]))
