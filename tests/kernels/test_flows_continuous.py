"""kernels.flows.continuous_gibbs: continuous deterministic Gibbs.

Exactness: every conditional-quantile rotation maps p to itself (p(x')|det J| = p(x) to 1e-10).
Statistics (z-scores over independent chains with random speeds): from exact draws of p the
chain stays at p at every step (marginal at the last step, and time averages), and from a fixed
start the time averages converge to the closed-form moments; with conditionals by quadrature the
sampler targets the gridded density exactly (moments summed over the grid).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels.flows as fl
from tests.kernels.test_flows_divergence_free import COV, DIM, MEAN, gauss, gauss_conditionals

CHAINS, STEPS = 128, 300


def _run(cond, dim, x0, key, steps=STEPS, step_size=1.0, splitting="strang"):
    init, step = fl.continuous_deterministic_gibbs(cond, dim, step_size, splitting)

    def one(key, x):
        _, info = jax.lax.scan(lambda s, _: step(s), init(key, x), None, length=steps)
        return info

    return jax.jit(jax.vmap(one))(jax.random.split(key, x0.shape[0]), x0)


def _z(per_chain, truth):
    per_chain = np.asarray(per_chain)
    return (per_chain.mean(0) - truth) / (per_chain.std(0, ddof=1) / np.sqrt(len(per_chain)))


@functools.cache
def _gauss_runs(splitting):
    rng = np.random.default_rng(0)
    exact = jnp.asarray(rng.multivariate_normal(MEAN, COV, size=CHAINS))
    fixed = jnp.tile(jnp.asarray(MEAN + 3.0), (CHAINS, 1))
    cond = gauss_conditionals()
    return (
        _run(cond, DIM, exact, jax.random.key(1), splitting=splitting),
        _run(cond, DIM, fixed, jax.random.key(2), splitting=splitting),
    )


@pytest.mark.parametrize("splitting", ["strang", "sequential"])
def test_gaussian_stationary_start_stays_stationary(splitting):
    """From x_0 ~ p the chain is at p at every step: the last point and the time averages."""
    info, _ = _gauss_runs(splitting)
    xs = np.asarray(info.position)
    last = xs[:, -1]
    assert np.all(np.abs(_z(last, MEAN)) < 4)  # z-score
    assert np.all(np.abs(_z((last - MEAN) ** 2, np.diag(COV))) < 4)  # z-score
    avg = np.asarray(fl.weighted_mean(jnp.swapaxes(info.position, 0, 1), info.weight[0]))
    assert np.all(np.abs(_z(avg, MEAN)) < 4)  # z-score
    assert np.all(info.weight == 1.0)
    assert int(info.num_conditional_evals[0, 0]) == (2 * DIM - 1 if splitting == "strang" else DIM)


@pytest.mark.parametrize("splitting", ["strang", "sequential"])
def test_gaussian_fixed_start_converges(splitting):
    """From x_0 = MEAN + 3 (far in the tail), the time averages after 50 steps match the
    closed-form mean, variances and a covariance."""
    _, info = _gauss_runs(splitting)
    xs = np.asarray(info.position)[:, 50:]
    d = xs - MEAN
    assert np.all(np.abs(_z(xs.mean(1), MEAN)) < 4)  # z-score
    assert np.all(np.abs(_z((d**2).mean(1), np.diag(COV))) < 4)  # z-score
    assert abs(_z((d[..., 0] * d[..., 1]).mean(1), COV[0, 1])) < 4  # z-score


def test_rotations_preserve_p_exactly():
    """p(phi_i(x)) |det J| = p(x) for every coordinate rotation (float64)."""
    with jax.enable_x64(True):
        subs = fl.gibbs_sub_flows(gauss_conditionals(), jnp.array([0.6, 0.9, 1.4]))
        rng = np.random.default_rng(3)
        for _ in range(5):
            x = jnp.asarray(rng.multivariate_normal(MEAN, COV))
            for phi in subs:
                for t in (0.3, -0.8, 2.7):
                    y, logdet = phi(x, t)
                    assert not np.allclose(np.asarray(y), np.asarray(x))
                    np.testing.assert_allclose(
                        float(gauss(y) + logdet), float(gauss(x)), atol=1e-10
                    )
                    back, _ = phi(y, -t)  # phi(., -t) inverts phi(., t)
                    np.testing.assert_allclose(np.asarray(back), np.asarray(x), atol=1e-8)


# --------------------------------------------------------------------------- quadrature on a grid
LOWER, UPPER, CELLS = np.array([-4.0, -3.0]), np.array([4.0, 8.0]), 64


def banana(x):
    return -0.5 * x[0] ** 2 - 0.5 * (x[1] - 0.5 * x[0] ** 2) ** 2


def _grid_truth():
    """Moments of the gridded density p(m(x)) on the box (uniform inside each cell)."""
    w = (UPPER - LOWER) / CELLS
    g = [LOWER[i] + (np.arange(CELLS) + 0.5) * w[i] for i in range(2)]
    X0, X1 = np.meshgrid(*g, indexing="ij")
    lp = np.asarray(jax.vmap(jax.vmap(banana))(jnp.stack([X0, X1], -1)))
    p = np.exp(lp - lp.max())
    p /= p.sum()
    mean = np.array([(p * X0).sum(), (p * X1).sum()])
    second = np.array([(p * X0**2).sum(), (p * X1**2).sum()]) + w**2 / 12
    return p, (X0, X1), mean, second


def test_grid_conditionals_sample_the_gridded_density():
    cond, log_grid = fl.grid_conditionals(banana, LOWER, UPPER, CELLS)
    p, (X0, X1), mean, second = _grid_truth()
    rng = np.random.default_rng(4)
    cells = rng.choice(p.size, size=CHAINS, p=p.ravel())
    w = (UPPER - LOWER) / CELLS
    x0 = np.stack([X0.ravel()[cells], X1.ravel()[cells]], -1) + (rng.random((CHAINS, 2)) - 0.5) * w
    info = _run(cond, 2, jnp.asarray(x0), jax.random.key(5), steps=200)
    xs = np.asarray(info.position)
    assert np.all((xs >= LOWER) & (xs <= UPPER))
    assert np.all(np.abs(_z(xs.mean(1), mean)) < 4)  # z-score
    assert np.all(np.abs(_z((xs**2).mean(1), second)) < 4)  # z-score
    assert np.all(np.abs(_z(xs[:, -1], mean)) < 4)  # z-score, marginal at the last step
    # the banana's own moments are close: E x1 = 0.5, E x1^2 = 1.5 (box truncation is tiny)
    np.testing.assert_allclose(mean[1], 0.5, atol=0.02)
    # the gridded density is what the rotations preserve (float64)
    with jax.enable_x64(True):
        cond64, log_grid64 = fl.grid_conditionals(banana, LOWER, UPPER, CELLS)
        subs = fl.gibbs_sub_flows(cond64, jnp.array([0.8, 1.2]))
        for x in x0[:5]:
            x = jnp.asarray(x, jnp.float64)
            for phi in subs:
                y, logdet = phi(x, 0.37)
                np.testing.assert_allclose(
                    float(log_grid64(y) + logdet), float(log_grid64(x)), atol=1e-10
                )
    assert float(log_grid(jnp.array([5.0, 0.0]))) == -np.inf


def test_errors():
    cond = gauss_conditionals()
    with pytest.raises(ValueError, match="splitting must be"):
        fl.continuous_deterministic_gibbs(cond, DIM, splitting="jacobi")
    with pytest.raises(ValueError, match="step_size must be positive"):
        fl.continuous_deterministic_gibbs(cond, DIM, step_size=0.0)
    init, _ = fl.continuous_deterministic_gibbs(cond, DIM)
    with pytest.raises(ValueError, match="position must have shape"):
        init(jax.random.key(0), jnp.zeros(2))
    with pytest.raises(ValueError, match="speed must be positive"):
        init(jax.random.key(0), jnp.zeros(DIM), speed=-1.0)
    with pytest.raises(ValueError, match="upper must exceed lower"):
        fl.grid_conditionals(banana, [0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="num_cells"):
        fl.grid_conditionals(banana, [0.0, 0.0], [1.0, 1.0], num_cells=1)
