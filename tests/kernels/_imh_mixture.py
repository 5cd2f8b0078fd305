"""The Gaussian-mixture target and broad Gaussian proposal of the implicit-MH tests."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

# Target: equal mixture of N(MEANS[k], SD^2 I), known only by samples. Independent proposal: a broad
# Gaussian covering both modes (sd 2.0 and 1.0 against 1.6 and 0.56 for the target), for which
# sup p/q is about 5.6, so that the bound 2 sqrt(excess) / (1 - rho) can be informative.
MEANS = np.array([[-1.5, 0.0], [1.5, 0.5]])
SD = 0.5
Q_MEAN, Q_SD = np.array([0.0, 0.25]), np.array([2.0, 1.0])


def mixture_sample(rng, n):
    c = rng.integers(0, 2, n)
    return MEANS[c] + SD * rng.standard_normal((n, 2))


def log_p(x):
    comps = [jnp.sum(norm.logpdf(x, m, SD), -1) for m in MEANS]
    return jnp.logaddexp(*comps) - jnp.log(2.0)


def log_q(x):
    return jnp.sum(norm.logpdf(x, Q_MEAN, Q_SD), -1)


def sample_q(key):
    return Q_MEAN + Q_SD * jax.random.normal(key, (2,))
