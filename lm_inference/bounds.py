r"""Bidirectional bounds on ``log Z`` and KL intervals for a twisted proposal.

For ``R`` independent runs (Zhao et al. 2024, sec. 4; estimators from :mod:`kernels.smc.estimators`):

- SMC lower bound ``L = log Z_hat`` of twisted SMC (``E[L] <= log Z``);
- conditional-SMC upper bound ``U``: the same sweep with particle 0 clamped to an exact sample of
  ``sigma`` (``E[U] >= log Z``);
- IWAE lower / upper bounds: the same without resampling;
- with ``f_q = E_q[log p0 phi / q]`` and ``g_q = E_sigma[log p0 phi / q]`` (single-sample weights
  of the proposal ``q``), ``KL(q || sigma) in [L - f_q, U - f_q]`` and
  ``KL(sigma || q) in [g_q - U, g_q - L]``.

Exact target samples come from the user, from :func:`rejection_samples` (``phi <= 1``), or for
infilling from the joint-sampling trick (:func:`lm_inference.potentials.infilling_joint_samples`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from kernels.smc import estimators
from kernels.types import Array, PRNGKey
from lm_inference.target import Target
from lm_inference.twisted_smc import smc, smc_runs, teacher_force
from lm_inference.twists import Twist

__all__ = ["Interval", "Bounds", "bidirectional_bounds", "rejection_samples"]


class Interval(NamedTuple):
    """A mean with a confidence interval ``[lo, hi]`` over runs, and the per-run values."""

    mean: float
    lo: float
    hi: float
    values: np.ndarray


def _interval(x, level=0.95) -> Interval:
    x = np.asarray(x, np.float64)
    m = float(x.mean())
    if x.size < 2 or not np.all(np.isfinite(x)):
        return Interval(m, m, m, x)  # a -inf run (no particle hit phi > 0): no t-interval
    h = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Interval(m, m - h, m + h, x)


class Bounds(NamedTuple):
    """Output of :func:`bidirectional_bounds` (intervals over runs, 95 % t-intervals).

    Attributes:
        lower, upper: SMC lower / conditional-SMC upper bounds on ``log Z``.
        iwae_lower, iwae_upper: importance-sampling lower / upper bounds.
        kl_q_sigma, kl_sigma_q: ``(lo, hi)`` intervals for the proposal's KLs (from the mean
            SMC bounds).
        elbo, eubo: ``f_q`` and ``g_q``.
        gap: mean ``upper - lower``.
    """

    lower: Interval
    upper: Interval
    iwae_lower: Interval
    iwae_upper: Interval
    kl_q_sigma: tuple
    kl_sigma_q: tuple
    elbo: float
    eubo: float
    gap: float


def rejection_samples(
    key: PRNGKey, target: Target, num_samples: int, batch: int = 1024, max_batches: int = 1000
) -> Array:
    """Exact draws from ``sigma`` by rejection from the untwisted proposal (requires every
    factor of ``phi`` to be ``<= 1``).

    The proposal is ``q ∝ p0 e^{w^next}`` (``p0`` for a terminal potential; masked decoding for
    a regex); its importance weight ``p0 phi / q`` is then at most 1, and ``s ~ q`` is accepted
    with that probability. Raises if the acceptance rate is so low that ``max_batches`` batches
    do not give ``num_samples`` draws.
    """
    out, n = [], 0
    for _ in range(max_batches):
        key, k1, k2 = jax.random.split(key, 3)
        r = smc(k1, target, batch, ess_threshold=0.0)
        if np.any(np.asarray(r.log_weights) > 1e-5):
            raise ValueError(
                "rejection_samples: needs phi <= 1 in every factor (importance weights <= 1); "
                "supply exact samples instead."
            )
        acc = np.asarray(jnp.log(jax.random.uniform(k2, (batch,))) < r.log_weights)
        out.append(np.asarray(r.samples)[acc])
        n += int(acc.sum())
        if n >= num_samples:
            return jnp.asarray(np.concatenate(out)[:num_samples])
    raise ValueError(
        f"rejection_samples: only {n} of {num_samples} accepted after {max_batches * batch} "
        "proposals; the event is too rare for rejection sampling: supply exact samples."
    )


def bidirectional_bounds(
    key: PRNGKey,
    target: Target,
    exact_samples: Array,
    num_particles: int,
    twist: Twist | None = None,
    num_runs: int | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    num_kl_samples: int = 256,
) -> Bounds:
    """SMC / conditional SMC and IWAE bounds on ``log Z`` and KL intervals over ``R`` runs.

    Args:
        key: PRNG key.
        target: the target.
        exact_samples: ``[R, T]`` exact draws of ``sigma`` (one reference per upper-bound run).
        num_particles: ``N`` per run.
        twist: proposal twist (``None``: ``p0``).
        num_runs: ``R`` (default ``len(exact_samples)``; at most that).
        resampling: resampling scheme.
        ess_threshold: ESS threshold of the SMC runs.
        num_kl_samples: proposal draws for ``f_q``.

    Returns:
        :class:`Bounds`.
    """
    exact_samples = target.check_tokens(exact_samples, "bidirectional_bounds: exact_samples")
    R = exact_samples.shape[0] if num_runs is None else int(num_runs)
    if R > exact_samples.shape[0] or R < 1:
        raise ValueError(
            f"bidirectional_bounds: num_runs={R} needs 1 <= R <= {exact_samples.shape[0]} "
            "exact samples (one per upper-bound run)."
        )
    keys = jax.random.split(key, (4, R))
    refs = exact_samples[:R]
    kw = dict(twist=twist, resampling=resampling)

    def run(thr, k, ref=None):
        return smc_runs(k, target, num_particles, ess_threshold=thr, references=ref, **kw).log_Z

    lower = run(ess_threshold, keys[0])
    upper = run(ess_threshold, keys[1], refs)
    il = run(0.0, keys[2])
    iu = run(0.0, keys[3], refs)
    lower, upper = np.asarray(lower), np.asarray(upper)
    # single-sample weights of the proposal: f_q on q draws, g_q on exact draws
    q_draws = smc(
        jax.random.fold_in(key, 1), target, num_kl_samples, ess_threshold=0.0, twist=twist
    ).samples
    log_w_q = teacher_force(target, q_draws, twist).log_weight()
    log_w_s = teacher_force(target, exact_samples, twist).log_weight()
    kl = estimators.kl_intervals(lower, upper, log_w_q, log_w_s)
    return Bounds(
        _interval(lower),
        _interval(upper),
        _interval(il),
        _interval(iu),
        tuple(float(x) for x in kl.kl_q_sigma),
        tuple(float(x) for x in kl.kl_sigma_q),
        float(kl.elbo),
        float(kl.eubo),
        float(np.mean(upper - lower)),
    )
