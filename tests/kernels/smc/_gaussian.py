"""Shared by the SMC tests: a conjugate Gaussian target with an asymmetric (shifted) likelihood,
prior N(0, I_2), y | x ~ N(x, S^2 I), and the comparison against numbers captured from the
implementation before the step API."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from kernels.smc import annealing

D, S = 2, 0.5
Y = np.array([2.5, -1.0])  # shifted: posterior far from the prior on one side only
LOG_Z = float(np.sum(norm.logpdf(Y, 0.0, np.sqrt(1 + S**2))))
POST_MEAN, POST_SD = Y / (1 + S**2), np.sqrt(S**2 / (1 + S**2))
BETAS = annealing.linear(8)
PARAMS = dict(step_size=0.4, inverse_mass_matrix=np.ones(D), num_integration_steps=4)


def log_prior(x):
    return norm.logpdf(x).sum()


def log_lik(x):
    return norm.logpdf(jnp.asarray(Y, x.dtype), x, S).sum()


def sample_prior(k):
    return jax.random.normal(k, (D,))


def assert_matches_before(res, before, rtol):
    """Compare an SMCResult with numbers captured from the pre-step-API implementation."""
    np.testing.assert_allclose(float(res.log_Z), before["log_Z"], rtol=rtol)
    np.testing.assert_allclose(res.log_Z_increments, before["incs"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(res.ess, before["ess"], rtol=rtol)
    np.testing.assert_array_equal(np.asarray(res.resampled, int), before["resampled"])
    np.testing.assert_array_equal(np.asarray(res.ancestors).sum(axis=1), before["anc_sum"])
    x = np.asarray(jax.tree.leaves(res.particles)[0]).reshape(-1)[:4]
    np.testing.assert_allclose(x, before["x"], rtol=rtol)
    np.testing.assert_allclose(res.log_weights[:4], before["lw"], rtol=rtol)
