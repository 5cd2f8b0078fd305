"""Twisted and conditional SMC on a tiny discrete sequence model, checked by exhaustive
enumeration of the extended space (2 tokens, 2 steps, 2 particles)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.smc import estimators, resampling, twisted

V, T = 2, 2
P1 = np.array([0.7, 0.3])  # p0(s1)
P2 = np.array([[0.2, 0.8], [0.6, 0.4]])  # p0(s2 | s1)
PHI = np.array([[0.9, 0.05], [0.3, 0.6]])  # phi(s1, s2) <= 1, asymmetric
JOINT = P1[:, None] * P2 * PHI
Z = JOINT.sum()
SIGMA = JOINT / Z
PSI_OPT = (P2 * PHI).sum(1)  # psi_1*(s1) = E[phi | s1]
PSI_BAD = np.array([0.5, 1.5])  # a deliberately wrong twist


def log_p0(tokens, t):
    return jnp.where(t == 0, jnp.log(P1), jnp.log(P2)[tokens[0]])


def log_phi(tokens):
    return jnp.log(PHI)[tokens[0], tokens[1]]


def twist(psi):
    return lambda tokens, t: jnp.log(psi)


def _run(
    key, n, psi, proposal, reference=None, ess_threshold=1.0, resampling_=resampling.multinomial
):
    return twisted.run(
        key,
        log_p0,
        log_phi,
        T,
        V,
        n,
        log_twist_fn=twist(psi),
        proposal=proposal,
        reference=reference,
        ess_threshold=ess_threshold,
        resampling=resampling_,
    )


def _enumerate(psi, conditional):
    """E[Z_hat] (SMC) or E[1/Z_hat] (conditional SMC), N = 2, bootstrap proposal p0,
    multinomial resampling before step 2, weights from resampling.normalize."""
    N = 2
    total = 0.0
    refs = list(itertools.product(range(V), range(V))) if conditional else [None]
    for ref in refs:
        p_ref = SIGMA[ref] if conditional else 1.0
        free = range(1, N) if conditional else range(N)
        for s1_free in itertools.product(range(V), repeat=len(free)):
            s1 = ([ref[0]] if conditional else []) + list(s1_free)
            p_s1 = np.prod([P1[s] for s in s1_free])
            w1 = np.array([psi[s] for s in s1])  # p0 psi_1 / (q psi_0) with q = p0
            W1 = np.exp(np.asarray(resampling.normalize(jnp.log(jnp.asarray(w1)))))
            for a_free in itertools.product(range(N), repeat=len(free)):
                a = ([0] if conditional else []) + list(a_free)
                p_a = np.prod([W1[i] for i in a_free])
                for s2_free in itertools.product(range(V), repeat=len(free)):
                    s2 = ([ref[1]] if conditional else []) + list(s2_free)
                    off = 1 if conditional else 0
                    p_s2 = np.prod([P2[s1[a[i + off]], s2[i + off]] for i in range(len(free))])
                    w2 = np.array([PHI[s1[a[i]], s2[i]] / psi[s1[a[i]]] for i in range(N)])
                    z_hat = w1.mean() * w2.mean()
                    total += p_ref * p_s1 * p_a * p_s2 * (1 / z_hat if conditional else z_hat)
    return total


def test_enumeration_unbiased_Z_and_inverse_Z():
    with jax.enable_x64(True):
        for psi in (PSI_BAD, PSI_OPT, np.ones(2)):
            np.testing.assert_allclose(_enumerate(psi, False), Z, rtol=1e-12)
            np.testing.assert_allclose(_enumerate(psi, True), 1 / Z, rtol=1e-12)


@functools.cache
def _mc(proposal, conditional, n=2, R=4000):
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(int(conditional)), R)

        def one(k):
            if not conditional:
                return _run(k, n, PSI_BAD, proposal).log_Z
            k1, k2 = jax.random.split(k)
            idx = jax.random.choice(k1, V * T, p=jnp.asarray(SIGMA.ravel()))
            ref = jnp.stack([idx // V, idx % V])
            return _run(k2, n, PSI_BAD, proposal, reference=ref).log_Z

        return np.asarray(jax.jit(jax.vmap(one))(keys))


@pytest.mark.parametrize("proposal", ["base", "twist"])
def test_sampler_matches_enumerated_identities(proposal):
    lo, up = _mc(proposal, False), _mc(proposal, True)
    z, iz = np.exp(lo), np.exp(-up)
    assert abs((z.mean() - Z) / (z.std() / np.sqrt(z.size))) < 4  # z-score: E[Z_hat] = Z
    assert abs((iz.mean() - 1 / Z) / (iz.std() / np.sqrt(iz.size))) < 4  # z: E[1/Z_hat] = 1/Z
    assert lo.mean() < np.log(Z) < up.mean()


def test_exact_twists_give_exact_log_Z():
    with jax.enable_x64(True):
        f = jax.jit(lambda k: _run(k, 3, PSI_OPT, "twist").log_Z)
        g = jax.jit(lambda k: _run(k, 3, PSI_OPT, "twist", reference=jnp.array([1, 1])).log_Z)
        for s in range(5):
            np.testing.assert_allclose(float(f(jax.random.key(s))), np.log(Z), atol=1e-12)
            np.testing.assert_allclose(float(g(jax.random.key(s))), np.log(Z), atol=1e-12)


def test_no_resampling_is_iwae():
    """Without resampling SMC is importance sampling over sequences (IWAE lower bound) and
    conditional SMC is the IWAE upper bound, with the same draws."""
    with jax.enable_x64(True):
        n = 5
        ref = jnp.array([1, 0])
        for reference in (None, ref):
            res = jax.jit(
                lambda k, reference=reference: _run(
                    k, n, PSI_BAD, "base", reference=reference, ess_threshold=0.0
                )
            )(jax.random.key(3))
            toks = np.asarray(res.samples)
            assert not np.any(res.resampled)
            # log sigma_tilde - log q with q = p0: log phi
            log_w = np.log(PHI[toks[:, 0], toks[:, 1]])
            if reference is None:
                expect = estimators.iwae_lower_bound(log_w)
            else:
                np.testing.assert_array_equal(toks[0], ref)
                expect = estimators.iwae_upper_bound(log_w[0], log_w[1:])
            np.testing.assert_allclose(float(res.log_Z), float(expect), rtol=1e-12)


def test_kl_intervals_contain_exact_kls():
    """q = twisted proposal with PSI_BAD; exact KLs by enumeration."""
    with jax.enable_x64(True):
        q1 = P1 * PSI_BAD / (P1 * PSI_BAD).sum()
        q2 = P2 * PHI / (P2 * PHI).sum(1, keepdims=True)
        Q = q1[:, None] * q2
        log_w = np.log(JOINT) - np.log(Q)
        kl_q = np.sum(Q * (np.log(Q) - np.log(SIGMA)))
        kl_s = np.sum(SIGMA * (np.log(SIGMA) - np.log(Q)))
        lo, up = _mc("twist", False), _mc("twist", True)
        kl = estimators.kl_intervals(lo, up, (Q * log_w).sum(), (SIGMA * log_w).sum())
        se = max(lo.std(), up.std()) / np.sqrt(lo.size)
        assert kl.kl_q_sigma[0] - 4 * se <= kl_q <= kl.kl_q_sigma[1] + 4 * se  # z-score
        assert kl.kl_sigma_q[0] - 4 * se <= kl_s <= kl.kl_sigma_q[1] + 4 * se  # z-score


def test_kl_q_sigma_is_inf_outside_the_support():
    """A proposal draw with sigma = 0 (log w = -inf) gives KL(q || sigma) = inf, never nan, even
    when a run's lower bound is -inf; KL(sigma || q) stays finite."""
    log_w_q = jnp.array([-1.0, -jnp.inf])
    kl = estimators.kl_intervals(
        jnp.array([-jnp.inf, -2.0]), jnp.array([-1.0, -1.5]), log_w_q, -1.2
    )
    assert float(kl.kl_q_sigma[0]) == np.inf and float(kl.kl_q_sigma[1]) == np.inf
    assert np.isfinite(float(kl.kl_sigma_q[0]))


def test_errors():
    with pytest.raises(ValueError, match="proposal"):
        twisted.run(jax.random.key(0), log_p0, log_phi, T, V, 2, proposal="nope")
    with pytest.raises(ValueError, match="reference"):
        twisted.run(jax.random.key(0), log_p0, log_phi, T, V, 2, reference=jnp.zeros(3, int))


def test_adaptive_resampling_conditional_systematic_identities():
    """ESS-triggered resampling with (conditional) systematic resampling keeps E[Z_hat] = Z and
    E_CSMC[1/Z_hat] = 1/Z (the decision is a function of all weights, reference included)."""
    with jax.enable_x64(True):

        def one(k):
            k1, k2, k3 = jax.random.split(k, 3)
            idx = jax.random.choice(k1, V * T, p=jnp.asarray(SIGMA.ravel()))
            ref = jnp.stack([idx // V, idx % V])
            kw = dict(ess_threshold=0.8, resampling_=resampling.systematic)
            up = _run(k2, 3, PSI_BAD, "base", reference=ref, **kw)
            lo = _run(k3, 3, PSI_BAD, "base", **kw)
            return lo.log_Z, up.log_Z, up.resampled.mean()

        R = 20000
        lo, up, frac = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), R))
        assert 0.05 < float(frac.mean()) < 0.95  # the trigger is exercised both ways
        z, iz = np.exp(np.asarray(lo)), np.exp(-np.asarray(up))
        assert abs((z.mean() - Z) / (z.std() / np.sqrt(R))) < 4  # z-score
        assert abs((iz.mean() - 1 / Z) / (iz.std() / np.sqrt(R))) < 4  # z-score


def _custom_q(tokens, t):
    """A user proposal: fixed asymmetric logits, ignoring p0 and the twist."""
    return jnp.where(t == 0, jnp.log(jnp.array([0.25, 0.75])), jnp.log(jnp.array([0.6, 0.4])))


def test_custom_proposal_identities():
    """A user-supplied proposal q (weights p0 psi_t / (q psi_{t-1}), eq. 6) with a wrong twist:
    E[Z_hat] = Z and E_CSMC[1/Z_hat] = 1/Z (z-scores, R = 4000, N = 2)."""
    with jax.enable_x64(True):

        def one(k):
            k1, k2, k3 = jax.random.split(k, 3)
            idx = jax.random.choice(k1, V * T, p=jnp.asarray(SIGMA.ravel()))
            ref = jnp.stack([idx // V, idx % V])
            lo = _run(k2, 2, PSI_BAD, _custom_q).log_Z
            up = _run(k3, 2, PSI_BAD, _custom_q, reference=ref).log_Z
            return lo, up

        R = 4000
        lo, up = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(12), R))
        z, iz = np.exp(np.asarray(lo)), np.exp(-np.asarray(up))
        assert abs((z.mean() - Z) / (z.std() / np.sqrt(R))) < 4  # z-score
        assert abs((iz.mean() - 1 / Z) / (iz.std() / np.sqrt(R))) < 4  # z-score


def test_custom_proposal_equal_to_optimal_is_exact():
    """The custom proposal q = p0 psi*_t (normalized), exact twists: every run gives log Z."""

    def q_opt(tokens, t):
        return log_p0(tokens, t) + jnp.where(t == 0, jnp.log(PSI_OPT), jnp.log(PHI)[tokens[0]])

    with jax.enable_x64(True):
        f = jax.jit(lambda k, r: _run(k, 3, PSI_OPT, q_opt, reference=r).log_Z)
        g = jax.jit(lambda k: _run(k, 3, PSI_OPT, q_opt).log_Z)
        for s in range(4):
            np.testing.assert_allclose(float(g(jax.random.key(s))), np.log(Z), atol=1e-12)
            ref = jnp.array([s // 2, s % 2])
            np.testing.assert_allclose(float(f(jax.random.key(s), ref)), np.log(Z), atol=1e-12)
