import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.smc import annealing, resampling


def test_paths():
    lb, lt = jnp.array([-1.0, -3.0]), jnp.array([-2.0, 0.5])
    for b in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(annealing.geometric(lb, lt, b), (1 - b) * lb + b * lt)
        # q -> 1 approaches the geometric path; q = 0 is the arithmetic mixture
        np.testing.assert_allclose(
            annealing.q_path(0.999)(lb, lt, b), (1 - b) * lb + b * lt, atol=1e-2
        )
        mix = np.log((1 - b) * np.exp(lb) + b * np.exp(lt))
        np.testing.assert_allclose(annealing.q_path(0.0)(lb, lt, b), mix, rtol=1e-6)
    # endpoints of every q-path
    np.testing.assert_allclose(annealing.q_path(0.5)(lb, lt, 0.0), lb, rtol=1e-6)
    np.testing.assert_allclose(annealing.q_path(0.5)(lb, lt, 1.0), lt, rtol=1e-6)
    with pytest.raises(ValueError, match="q-path"):
        annealing.q_path(1.5)


def test_schedules():
    for b in (annealing.linear(7), annealing.sigmoid(7), annealing.sigmoid(7, 8.0)):
        assert b.shape == (8,) and b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)
    s = annealing.sigmoid(10, 6.0)
    assert s[1] - s[0] < s[5] - s[4]  # dense near the ends


def test_next_beta_hits_target_cess():
    """The bisection solves CESS(beta') = target for a likelihood with both signs of log L."""
    ll = jnp.asarray(np.random.default_rng(0).normal(-2.0, 3.0, 500))  # asymmetric
    log_w = jnp.asarray(np.random.default_rng(1).normal(0, 0.5, 500))
    W = np.exp(np.asarray(resampling.normalize(log_w)))
    beta = 0.1
    nb = float(
        jax.jit(
            lambda: annealing.next_beta_bisection(log_w, lambda b: (b - beta) * ll, beta, 0.6)
        )()
    )
    assert beta < nb < 1
    w = np.exp((nb - beta) * np.asarray(ll))
    cess = (W @ w) ** 2 / (W @ w**2)
    np.testing.assert_allclose(cess, 0.6, rtol=1e-4)
    # a flat likelihood jumps straight to 1
    assert float(annealing.next_beta_bisection(log_w, lambda b: 0 * ll, beta, 0.6)) == 1.0
