"""kernels.composition.cycle: HMC on a continuous block and a discrete move on another.

Target: z in {0, 1, 2} with p(z) = W, x | z ~ N(MU[z], I) in 2-d (float64). 256 independent
chains start at exact draws, so every sweep is stationary; for each chain the time average of
f over the sweeps is unbiased for E f and the chain averages are independent.
z = (mean of chain averages - E f) / (sd / sqrt(256)), |z| < 4 for f = 1{z = k} (k = 0, 1, 2),
x0, x1 and x_j 1{z = k} (closed form: P(z = k) = W[k], E x = sum_k W[k] MU[k],
E x_j 1{z = k} = W[k] MU[k, j]). A z-move that ignores x (targets p(z), not p(z | x)) gives
|z| up to 245 on the last statistics with the same budget.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels.involutive as inv
from kernels.composition import cycle

W = np.array([0.2, 0.3, 0.5])
MU = np.array([[-1.5, 0.0], [0.0, 1.0], [1.5, -1.0]])
CHAINS, SWEEPS = 256, 800


def logp(position):
    z, x = position["z"], position["x"]
    mu = jnp.asarray(MU)[z]
    return jnp.log(jnp.asarray(W))[z] - 0.5 * jnp.sum((x - mu) ** 2)


def ring_walk(logdensity_fn):
    """Involutive move on {0, 1, 2}: v = +-1 uniform, (z, v) -> ((z + v) mod 3, -v)."""
    return inv.imcmc(
        logdensity_fn,
        lambda key, z: 2 * jax.random.bernoulli(key).astype(z.dtype) - 1,
        lambda v, z: jnp.zeros(()),
        lambda z, v: ((z + v) % 3, -v, 0.0),
    )


def persistent_hmc(logdensity_fn):
    move = inv.partial_refresh(inv.leapfrog_move(logdensity_fn, 0.3, None, 4), 0.8)
    return inv.as_sampling_algorithm(move, logdensity_fn, with_grad=True)


BLOCKS = [("x", persistent_hmc), ("z", ring_walk)]


def test_cycle_matches_closed_form():
    with jax.enable_x64(True):
        algo = cycle(logp, BLOCKS)

        @jax.jit
        def run(key):
            key_z, key_x, key_run = jax.random.split(key, 3)
            zs = jax.random.categorical(key_z, jnp.log(jnp.asarray(W)), shape=(CHAINS,))
            xs = jnp.asarray(MU)[zs] + jax.random.normal(key_x, (CHAINS, 2))

            def chain(z, x, key):
                def body(state, key):
                    state, info = algo.step(key, state)
                    z, x = state.position["z"], state.position["x"]
                    onehot = jax.nn.one_hot(z, 3)
                    stats = jnp.concatenate([onehot, x, jnp.outer(onehot, x).ravel()])
                    return state, (stats, info.infos[1].is_accepted)

                state = algo.init({"z": z, "x": x})
                last, (stats, moved) = jax.lax.scan(body, state, jax.random.split(key, SWEEPS))
                return stats.mean(0), moved.mean(), last.states[0].aux[1]

            return jax.vmap(chain)(zs, xs, jax.random.split(key_run, CHAINS))

        averages, moved, has_momentum = map(np.asarray, run(jax.random.key(11)))
    truth = np.concatenate([W, W @ MU, (W[:, None] * MU).ravel()])
    z = (averages.mean(0) - truth) / (averages.std(0, ddof=1) / np.sqrt(CHAINS))
    assert np.max(np.abs(z)) < 4, (averages.mean(0), truth, z)  # z-score
    assert moved.mean() > 0.2  # the discrete block moves
    assert has_momentum.all()  # the HMC block's persistent momentum is carried between sweeps


def test_cycle_checks_blocks():
    with pytest.raises(KeyError, match="'y' is not a key"):
        cycle(logp, [("y", ring_walk)]).init({"z": jnp.asarray(0), "x": jnp.zeros(2)})
    with pytest.raises(TypeError, match="pair"):
        cycle(logp, [ring_walk])
    with pytest.raises(ValueError, match="at least one"):
        cycle(logp, [])
