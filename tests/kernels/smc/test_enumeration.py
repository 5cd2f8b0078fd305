"""Exhaustive enumeration of the extended space of SMC and conditional SMC.

A tiny discrete Feynman-Kac model: 2 states, ``x_0 ~ M_0`` weighted by ``G_0``, then 2 steps
``x_t ~ M_t(x_{t-1}, .)`` weighted by ``G_t(x_{t-1}, x_t)``; ``N = 2, 3`` (4 in the slow test)
particles. The exact law of every resampling scheme, conditional or not, is computed from the
library's own code by integrating over its uniforms cell by cell (the ancestors are piecewise
constant in them) and over its input permutation; the particle system is then enumerated
exactly (every particle state, every ancestor vector, with ESS-triggered or systematic
resampling), giving in float64

* ``E[Z_hat] = Z`` for SMC (the lower-bound identity), and
* ``E[1 / Z_hat] = 1 / Z`` for conditional SMC whose reference path is drawn from the target
  ``sigma`` (the upper-bound identity),

to 1e-10. A negative control (the naive "reference + the scheme on the other ``N - 1``"
conditional systematic) violates the second identity, so the test has power; and the driver
``kernels.smc.sequential.run`` is checked against the enumerated law of ``log Z_hat``.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from kernels.smc import resampling as rs
from kernels.smc import sequential

V, T = 2, 2
M0 = np.array([0.7, 0.3])
G0 = np.array([0.2, 1.0])
MS = np.array([[[0.2, 0.8], [0.6, 0.4]], [[0.5, 0.5], [0.1, 0.9]]])  # M_t[x_{t-1}, x_t]
GS = np.array([[[0.9, 0.05], [0.3, 0.6]], [[0.4, 0.7], [0.05, 1.0]]])  # G_t[x_{t-1}, x_t]


def _path_weight(p):
    w = M0[p[0]] * G0[p[0]]
    for t in range(T):
        w *= MS[t][p[t], p[t + 1]] * GS[t][p[t], p[t + 1]]
    return w


PATHS = list(itertools.product(range(V), repeat=T + 1))
Z = sum(_path_weight(p) for p in PATHS)
SIGMA = {p: _path_weight(p) / Z for p in PATHS}


# --------------------------------------------------------------------------- exact laws
def _cells(breaks):
    """Cartesian product of the cells of ``[0, 1)`` cut at ``breaks[j]`` (one list per
    coordinate): midpoints ``[C, d]`` and probabilities ``[C]``."""
    mids, lens = [], []
    for b in breaks:
        edges = np.unique(np.clip(np.concatenate([[0.0, 1.0], np.asarray(b, float)]), 0, 1))
        mids.append((edges[:-1] + edges[1:]) / 2)
        lens.append(np.diff(edges))
    if not breaks:
        return np.zeros((1, 0)), np.ones(1)
    grid = np.stack(np.meshgrid(*mids, indexing="ij"), -1).reshape(-1, len(breaks))
    prob = np.prod(np.stack(np.meshgrid(*lens, indexing="ij"), -1).reshape(-1, len(breaks)), 1)
    keep = prob > 0
    return grid[keep], prob[keep]


def _accumulate(out, ancestors, probs, weight=1.0):
    for a, p in zip(map(tuple, np.asarray(ancestors)), probs, strict=True):
        if p > 0:
            out[a] = out.get(a, 0.0) + weight * p


_SCHEME_FROM_NOISE = {  # (conditional, name) -> f(noise [d], log_weights, perm, m) -> ancestors
    (False, "multinomial"): lambda u, lw, perm, m: rs._inverse_cdf(u, lw),
    (False, "systematic"): lambda u, lw, perm, m: rs._grid_from(u[0], lw, m),
    (False, "stratified"): lambda u, lw, perm, m: rs._grid_from(u, lw, m),
    (False, "residual"): lambda u, lw, perm, m: rs._residual_from(u, lw, m),
    (True, "multinomial"): lambda u, lw, perm, m: rs._conditional_multinomial_from(u, lw, m),
    (True, "systematic"): lambda u, lw, perm, m: rs._conditional_systematic_from(perm, u[0], lw, m),
    (True, "stratified"): lambda u, lw, perm, m: rs._conditional_stratified_from(
        perm, u[0], u[1:], lw, m
    ),
    (True, "residual"): lambda u, lw, perm, m: rs._conditional_residual_from(u[0], u[1:], lw, m),
}


@functools.cache
def _evaluator(conditional, name, m):
    fn = _SCHEME_FROM_NOISE[conditional, name]
    return jax.jit(jax.vmap(lambda u, lw, perm: fn(u, lw, perm, m), (0, None, None)))


def _evaluate(conditional, name, m, u, p, lw, perm, out, weight=1.0):
    """The library's scheme at every cell midpoint ``u`` (padded to a power of two so that
    a few compilations serve every weight vector)."""
    size = 1 << max(int(np.ceil(np.log2(len(u)))), 0)
    u = np.concatenate([u, np.full((size - len(u), u.shape[1]), 0.5)])
    p = np.concatenate([p, np.zeros(size - len(p))])
    anc = _evaluator(conditional, name, m)(jnp.asarray(u), lw, jnp.asarray(perm))
    _accumulate(out, anc, p, weight)


def _law(name, conditional, w, m):
    """Exact law ``{ancestors: probability}`` of the library's scheme at normalized weights
    ``w``, from its uniforms (and input permutation)."""
    n = w.size
    lw = jnp.log(jnp.asarray(w))
    cdf = np.cumsum(w)
    res = m * w - np.floor(m * w)
    rcdf = np.cumsum(res) / max(res.sum(), 1e-300)
    out = {}
    identity = np.arange(n)
    if not conditional:
        breaks = {
            "multinomial": [cdf] * m,
            "systematic": [[m * c - k for c in cdf for k in range(m)]],
            "stratified": [[m * c - k for c in cdf] for k in range(m)],
            "residual": [rcdf] * m,
        }[name]
        _evaluate(False, name, m, *_cells(breaks), lw, identity, out)
        return out
    if name in ("multinomial", "residual"):
        breaks = [cdf] * (m - 1)
        if name == "residual":  # is the reference a deterministic copy? then the residual draws
            breaks = [[np.floor(m * w[0]) / (m * w[0])]] + [rcdf] * m
        _evaluate(True, name, m, *_cells(breaks), lw, identity, out)
        return out
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        c = np.concatenate([[0.0], np.cumsum(w[list(perm)])])
        pos = perm.index(0)
        lo, hi = c[pos], c[pos + 1]
        # V = lo + u (hi - lo); cut where V + j/M crosses a CDF value or a multiple of 1/M
        cuts = [cc - j / m + s for cc in c for j in range(m) for s in (-1, 0, 1)]
        cuts += [k / m for k in range(m + 1)]
        breaks = [[(v - lo) / (hi - lo) for v in cuts if lo < v < hi]]
        if name == "stratified":
            breaks += [[m * cc - k for cc in c] for k in range(m)]
        _evaluate(True, name, m, *_cells(breaks), lw, np.asarray(perm), out, 1.0 / len(perms))
    return out


def _naive_conditional_systematic_law(w, m):
    """Negative control: ``A_0 = 0`` and plain systematic resampling of the other ``M - 1``."""
    cdf = np.cumsum(w)
    lw = jnp.log(jnp.asarray(w))
    u, p = _cells([[(m - 1) * c - k for c in cdf for k in range(m - 1)]])
    anc = jax.vmap(lambda u: rs._grid_from(u[0], lw, m - 1))(jnp.asarray(u))
    anc = np.concatenate([np.zeros((anc.shape[0], 1), int), np.asarray(anc)], 1)
    out = {}
    _accumulate(out, anc, p)
    return out


# --------------------------------------------------------------------------- the particle system
def _enumerate(law_fn, n, conditional, threshold):
    """Exact law of ``log Z_hat`` (list of ``(log_z, prob)``) of ``sequential.run`` with
    ``ess_threshold=threshold``; conditional: mixed over reference paths ``~ sigma``."""
    cache = {}

    def law(lw):
        w = np.exp(lw - logsumexp(lw))
        key = tuple(np.round(w, 13))
        if key not in cache:
            cache[key] = law_fn(w, n)
        return cache[key]

    out, decisions = [], set()
    refs = list(SIGMA.items()) if conditional else [(None, 1.0)]
    free = n - 1 if conditional else n
    head = (lambda x: (x,)) if conditional else (lambda x: ())
    for ref, p_ref in refs:
        states = {}

        def add(states, x, lw, log_z, p):
            inc = logsumexp(lw)
            lw, log_z = lw - inc, log_z + inc
            k = (x, tuple(np.round(lw, 12)), round(log_z, 12))
            if k in states:
                states[k][3] += p
            else:
                states[k] = [x, lw, log_z, p]

        for x0f in itertools.product(range(V), repeat=free):
            x = head(ref[0] if conditional else None) + x0f
            p = np.prod([M0[s] for s in x0f])
            add(states, x, np.log(G0[list(x)]) - np.log(n), 0.0, p)
        for t in range(1, T + 1):
            new = {}
            for x, lw, log_z, p in states.values():
                do = threshold >= 1 or (
                    threshold > 0 and float(rs.log_ess(jnp.asarray(lw))) < np.log(threshold * n)
                )
                decisions.add(do)
                laws = law(lw) if do else {tuple(range(n)): 1.0}
                after = np.full(n, -np.log(n)) if do else lw
                for anc, pa in laws.items():
                    xa = [x[a] for a in anc]
                    for xf in itertools.product(range(V), repeat=free):
                        xn = head(ref[t] if conditional else None) + xf
                        off = n - free
                        pn = np.prod([MS[t - 1][xa[i + off], xf[i]] for i in range(free)])
                        g = np.log([GS[t - 1][xa[i], xn[i]] for i in range(n)])
                        add(new, xn, after + g, log_z, p * pa * pn)
            states = new
        out += [(log_z, p_ref * p) for _, _, log_z, p in states.values()]
    log_z, prob = np.array(out).T
    np.testing.assert_allclose(prob.sum(), 1.0, rtol=1e-12)
    if 0 < threshold < 1:  # the ESS trigger goes both ways somewhere in the extended space
        assert decisions == {True, False}
    return log_z, prob


@functools.cache
def _exact(name, conditional, n, threshold):
    with jax.enable_x64(True):
        return _enumerate(lambda w, m: _law(name, conditional, w, m), n, conditional, threshold)


CASES = [(s, n, th) for s in rs.SCHEMES for n in (2, 3) for th in (1.0, 0.8)]


@pytest.mark.parametrize("name,n,threshold", CASES)
def test_enumerated_identities(name, n, threshold):
    """E[Z_hat] = Z (SMC) and E[1/Z_hat] = 1/Z (conditional SMC from sigma), exactly."""
    log_z, p = _exact(name, False, n, threshold)
    np.testing.assert_allclose(p @ np.exp(log_z), Z, rtol=1e-10)
    assert p @ log_z < np.log(Z)  # Jensen: a lower bound in expectation
    log_z, p = _exact(name, True, n, threshold)
    np.testing.assert_allclose(p @ np.exp(-log_z), 1 / Z, rtol=1e-10)
    assert p @ log_z > np.log(Z)  # an upper bound in expectation


@pytest.mark.slow
@pytest.mark.parametrize("name", ["systematic", "stratified", "residual"])
def test_enumerated_identities_four_particles(name):
    """N = 4: where a conditional systematic without the random input permutation fails."""
    log_z, p = _exact(name, True, 4, 1.0)
    np.testing.assert_allclose(p @ np.exp(-log_z), 1 / Z, rtol=1e-10)
    log_z, p = _exact(name, False, 4, 1.0)
    np.testing.assert_allclose(p @ np.exp(log_z), Z, rtol=1e-10)


def test_naive_conditional_systematic_is_biased():
    """Negative control: the enumeration detects a wrong conditional scheme (1% off)."""
    with jax.enable_x64(True):
        log_z, p = _enumerate(_naive_conditional_systematic_law, 3, True, 1.0)
    rel = p @ np.exp(-log_z) * Z - 1
    assert abs(rel) > 5e-3, rel


def _fk_run(key, n, scheme, threshold, reference=None):
    lm0, lg0 = jnp.log(M0), jnp.log(G0)
    lms, lgs = jnp.log(MS), jnp.log(GS)
    return sequential.run(
        key,
        init_fn=lambda k, n: jax.random.categorical(k, lm0, shape=(n,)),
        propose_fn=lambda k, x, t: jax.random.categorical(k, lms[t - 1][x], axis=-1),
        log_weight_fn=lambda xp, x, t: lgs[t - 1][xp, x],
        num_steps=T,
        num_particles=n,
        init_log_weight_fn=lambda x: lg0[x],
        resampling=scheme,
        ess_threshold=threshold,
        reference=reference,
    ).log_Z


@pytest.mark.parametrize(
    "name",
    ["systematic"]
    + [pytest.param(s, marks=pytest.mark.slow) for s in rs.SCHEMES if s != "systematic"],
)
def test_driver_matches_enumerated_law(name):
    """sequential.run with each scheme (conditional and not, ESS-triggered at 0.8, N = 3):
    the mean of log Z_hat matches its enumerated expectation, and E[Z_hat] = Z,
    E[1/Z_hat] = 1/Z (z-scores over R runs)."""
    R, n, th = 20000, 3, 0.8
    paths = np.array(list(SIGMA))
    probs = np.array(list(SIGMA.values()))
    with jax.enable_x64(True):
        scheme = rs.SCHEMES[name]

        def one(k):
            k1, k2, k3 = jax.random.split(k, 3)
            ref = jnp.asarray(paths)[jax.random.choice(k1, len(paths), p=jnp.asarray(probs))]
            return _fk_run(k2, n, scheme, th), _fk_run(k3, n, scheme, th, reference=ref)

        lo, up = map(np.asarray, jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), R)))
    for runs, conditional in ((lo, False), (up, True)):
        log_z, p = _exact(name, conditional, n, th)
        mean, var = p @ log_z, p @ (log_z - p @ log_z) ** 2
        assert abs(runs.mean() - mean) / math.sqrt(var / R) < 4  # z-score vs the exact law
    z, iz = np.exp(lo - np.log(Z)), np.exp(np.log(Z) - up)
    assert abs(z.mean() - 1) / (z.std() / math.sqrt(R)) < 4  # z-score: E[Z_hat] = Z
    assert abs(iz.mean() - 1) / (iz.std() / math.sqrt(R)) < 4  # z-score: E[1/Z_hat] = 1/Z
