"""Exact ground truths for the SMC tests, in numpy float64.

* ``kalman_filter`` / ``kalman_ffbs``: linear-Gaussian state-space model
  ``x_0 ~ N(m0, P0)``, ``x_t ~ N(A x_{t-1}, Q)``, ``y_t ~ N(C x_t, R)`` for ``t = 1..T``;
  exact ``log p(y_{1:T})`` and exact posterior paths ``x_{0:T} ~ p(x_{0:T} | y_{1:T})`` by
  forward filtering, backward sampling (Carter and Kohn, 1994).
* ``hmm_forward`` / ``hmm_ffbs``: discrete HMM ``z_0 ~ pi0``, ``z_t ~ P[z_{t-1}]``,
  ``y_t ~ p(y_t | z_t)``; exact log likelihood by the forward algorithm and exact posterior paths.
* ``normal_normal``, ``linear_regression``, ``gamma_poisson``: conjugate closed forms of
  ``log Z`` and of the posterior.
"""

import numpy as np
from scipy import special, stats


def kalman_filter(ys, A, Q, C, R, m0, P0):
    """Kalman filter.

    Args:
        ys: observations, shape ``(T, dy)``.
        A, Q: transition matrix and noise covariance, ``(dx, dx)``.
        C, R: observation matrix ``(dy, dx)`` and noise covariance ``(dy, dy)``.
        m0, P0: mean ``(dx,)`` and covariance of ``x_0``.

    Returns:
        ``(log_Z, means, covs, pred_means, pred_covs)`` with filtered moments of ``x_{0:T}``
        (index 0 is the prior of ``x_0``) and predictive moments of ``x_{1:T}``.
    """
    ys, A, Q, C, R = (np.asarray(a, np.float64) for a in (ys, A, Q, C, R))
    m, P = np.asarray(m0, np.float64), np.asarray(P0, np.float64)
    means, covs, pmeans, pcovs = [m], [P], [], []
    log_z = 0.0
    for y in ys:
        mp, Pp = A @ m, A @ P @ A.T + Q
        S = C @ Pp @ C.T + R
        log_z += stats.multivariate_normal(C @ mp, S).logpdf(y)
        K = np.linalg.solve(S, C @ Pp).T
        m = mp + K @ (y - C @ mp)
        P = Pp - K @ S @ K.T
        P = (P + P.T) / 2
        means.append(m)
        covs.append(P)
        pmeans.append(mp)
        pcovs.append(Pp)
    return log_z, np.stack(means), np.stack(covs), np.stack(pmeans), np.stack(pcovs)


def kalman_ffbs(rng, ys, A, Q, C, R, m0, P0, num_samples=1):
    """Exact posterior paths ``x_{0:T} | y_{1:T}``, shape ``(num_samples, T + 1, dx)``."""
    _, means, covs, pmeans, pcovs = kalman_filter(ys, A, Q, C, R, m0, P0)
    A = np.asarray(A, np.float64)
    T = len(ys)
    out = np.empty((num_samples, T + 1, means.shape[-1]))
    for s in range(num_samples):
        x = rng.multivariate_normal(means[T], covs[T])
        out[s, T] = x
        for t in range(T - 1, -1, -1):
            J = np.linalg.solve(pcovs[t], A @ covs[t]).T  # P_t A' Pp_{t+1}^{-1}
            mean = means[t] + J @ (x - pmeans[t])
            cov = covs[t] - J @ pcovs[t] @ J.T
            x = rng.multivariate_normal(mean, (cov + cov.T) / 2)
            out[s, t] = x
    return out


def hmm_forward(log_pi0, log_P, log_lik):
    """Forward algorithm.

    Args:
        log_pi0: ``(K,)`` log initial probabilities of ``z_0``.
        log_P: ``(K, K)`` log transition matrix, ``P[i, j] = p(z_t = j | z_{t-1} = i)``.
        log_lik: ``(T, K)`` ``log p(y_t | z_t = k)`` for ``t = 1..T``.

    Returns:
        ``(log_Z, log_alphas)`` with ``log_alphas`` of shape ``(T + 1, K)`` (filtering, unnormalized).
    """
    la = np.asarray(log_pi0, np.float64)
    alphas = [la]
    for ll in np.asarray(log_lik, np.float64):
        la = special.logsumexp(la[:, None] + log_P, axis=0) + ll
        alphas.append(la)
    return float(special.logsumexp(la)), np.stack(alphas)


def hmm_ffbs(rng, log_pi0, log_P, log_lik, num_samples=1):
    """Exact posterior paths ``z_{0:T} | y_{1:T}``, integer array ``(num_samples, T + 1)``."""
    _, la = hmm_forward(log_pi0, log_P, log_lik)
    T = la.shape[0] - 1
    out = np.empty((num_samples, T + 1), np.int64)
    for s in range(num_samples):
        p = np.exp(la[T] - special.logsumexp(la[T]))
        z = rng.choice(len(p), p=p)
        out[s, T] = z
        for t in range(T - 1, -1, -1):
            lp = la[t] + log_P[:, z]
            z = rng.choice(len(lp), p=np.exp(lp - special.logsumexp(lp)))
            out[s, t] = z
    return out


def normal_normal(y, m0, s0, sigma):
    """``mu ~ N(m0, s0^2)``, ``y_i ~ N(mu, sigma^2)``: ``(log_Z, post_mean, post_sd)``."""
    y = np.asarray(y, np.float64)
    n = y.size
    cov = sigma**2 * np.eye(n) + s0**2 * np.ones((n, n))
    log_z = stats.multivariate_normal(np.full(n, m0), cov).logpdf(y)
    prec = 1 / s0**2 + n / sigma**2
    mean = (m0 / s0**2 + y.sum() / sigma**2) / prec
    return float(log_z), float(mean), float(np.sqrt(1 / prec))


def linear_regression(X, y, prior_sd, sigma):
    """``w ~ N(0, prior_sd^2 I)``, ``y ~ N(X w, sigma^2 I)``: ``(log_Z, post_mean, post_cov)``."""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    n, d = X.shape
    log_z = stats.multivariate_normal(
        np.zeros(n), sigma**2 * np.eye(n) + prior_sd**2 * X @ X.T
    ).logpdf(y)
    prec = np.eye(d) / prior_sd**2 + X.T @ X / sigma**2
    cov = np.linalg.inv(prec)
    return float(log_z), cov @ X.T @ y / sigma**2, cov


def gamma_poisson(y, a, b):
    """``lam ~ Gamma(a, rate=b)``, ``y_i ~ Poisson(lam)``: ``(log_Z, post_a, post_b)``.

    An asymmetric likelihood with a positive (log-transformed) latent.
    """
    y = np.asarray(y, np.float64)
    n, s = y.size, y.sum()
    log_z = (
        a * np.log(b)
        - special.gammaln(a)
        + special.gammaln(a + s)
        - (a + s) * np.log(b + n)
        - special.gammaln(y + 1).sum()
    )
    return float(log_z), a + s, b + n


def log_mean_exp(x):
    """``log(mean(exp(x)))`` in float64."""
    x = np.asarray(x, np.float64)
    return float(special.logsumexp(x) - np.log(x.size))


def lme_z(x, truth):
    """Delta-method z-score of ``log_mean_exp(x)`` against ``truth``.

    ``w = exp(x - truth)`` has mean 1 if ``x`` is an unbiased log-estimator of ``exp(truth)``;
    ``log mean w`` has standard error ``sd(w) / (sqrt(R) mean(w))``.
    """
    w = np.exp(np.asarray(x, np.float64) - truth)
    se = w.std(ddof=1) / np.sqrt(w.size) / w.mean()
    return float(np.log(w.mean()) / max(se, 1e-12))


def scalar_lgssm_backward(ys, a, q, r):
    """Backward information filter of the scalar model ``x_t ~ N(a x_{t-1}, q^2)``,
    ``y_t ~ N(x_t, r^2)``: ``log p(y_{t+1:T} | x_t) = -P_t x^2 / 2 + h_t x + c_t``.

    Returns ``(P, h, c)`` each ``(T + 1,)`` (index ``T`` is the constant 1), and the optimal
    proposal ``p(x_t | x_{t-1}, y_{t:T}) = N((a x_{t-1} / q^2 + hy_t) / S_t, 1 / S_t)`` as
    ``(S, hy)`` each ``(T,)`` for ``t = 1..T`` (index ``t - 1``).
    """
    ys = np.asarray(ys, np.float64)
    T = ys.size
    P, h, c = np.zeros(T + 1), np.zeros(T + 1), np.zeros(T + 1)
    S, hy = np.zeros(T), np.zeros(T)
    for t in range(T, 0, -1):  # absorb y_t (index t - 1) into beta_t, integrate x_t
        y = ys[t - 1]
        J = P[t] + 1 / r**2
        hp = h[t] + y / r**2
        cp = c[t] - 0.5 * y**2 / r**2 - 0.5 * np.log(2 * np.pi * r**2)
        s = J + 1 / q**2
        S[t - 1], hy[t - 1] = s, hp
        P[t - 1] = a**2 / q**2 - a**2 / (q**4 * s)
        h[t - 1] = hp * a / (q**2 * s)
        c[t - 1] = cp - 0.5 * np.log(1 + q**2 * J) + 0.5 * hp**2 / s
    return P, h, c, S, hy
