r"""Twist learning (Zhao, Brekelmans, Makhzani and Grosse, 2024, sec. 3 and 5).

Every method fits ``log psi_t(s_{1:t})`` (a :class:`lm_inference.twists.Twist`, ``t = 1..T``;
``psi_T`` is the proposal's approximation of ``phi``) on sequences drawn by the current
proposal; sample weights are constants (stop-gradient).

- ``"ctl"``, contrastive twist learning (their eq. 9-10): minimize
  ``sum_t KL(sigma(s_{1:t}) || pi_t^psi(s_{1:t}))`` with ``pi_t^psi ∝ p0 psi_t``, whose gradient is

  $$-\sum_t \Big(E_{\sigma}[\nabla \log \psi_t(s_{1:t})] - E_{\pi_t^\psi}[\nabla \log \psi_t(s_{1:t})]\Big).$$

  Positive expectations use exact target samples when given, otherwise the self-normalized
  importance weights ``p0 phi / q`` of proposal draws; negative expectations use the
  intermediate weights ``p0(s_{1:t}) psi_t(s_{1:t}) / q(s_{1:t})``.
- ``"sixo"`` (Lawson et al. 2022): logistic classification of ``sigma`` samples (label 1) against
  ``p0`` samples (label 0) with logit ``log psi_t``.
- ``"fudge"`` (Yang and Klein 2021): binary cross-entropy of ``psi_t`` against the label
  ``phi(s) in [0, 1]`` on ``p0`` samples (``psi_t`` estimates ``P(phi = 1 | s_{1:t})``). The twist
  is a probability, ``log psi = log sigmoid(f)`` (:func:`lm_inference.twists.probability_twist`),
  in the loss and in the returned twist: a ``log psi`` clipped at 0 in the loss only let the
  gradient push ``f`` far above 0 on prefixes whose every label is 1 (``log psi = +15``,
  proposals repeating the rewarded word, log Z -68 where the truth is -4.8).
- ``"rl"`` (soft Q-learning in log space): squared soft-Bellman residual
  ``(log psi_t(s_{1:t}) - sg[log sum_v p0(v | s_{1:t}) psi_{t+1}(s_{1:t}, v)])^2``, and
  ``(log psi_T - log phi)^2`` at the last step; where the target is ``-inf`` (``phi = 0``) the
  label-0 cross-entropy ``-log(1 - psi)``. The twist is a probability (``psi^*_t =
  E_{p0}[phi | s_{1:t}] <= 1`` for ``phi <= 1``) fitted on ``p0`` draws (off-policy: the
  Bellman equation holds on any full-support distribution). A squared error to ``log phi``
  clipped at -50, on the twist's own draws, gave residuals of ``50^2``, ``log psi`` of -130 and
  a proposal that collapsed away from the event (``log Z_hat = -inf`` in 8 of 8 runs on the
  embedded model, " king", T = 10).
- ``"dpg"`` (distributional policy gradient, Parshakova et al. 2019): maximize
  ``E_sigma[log q(s)]``, i.e. minimize ``KL(sigma || q)`` over the twist-induced proposal.

Exact samples: a pool is used without replacement, each sample once per pass, for
``exact_epochs`` passes (then self-normalized proposal positives); a function gives fresh ones
every step. A small pool resampled for hundreds of passes is memorized (held-out
``KL(sigma || q)`` of 20-50 nats, ``log Z_hat`` -15 to -26 where the truth is -4.8).

Diagnostics: held-out SMC ``log Z_hat`` and ESS on fixed keys every ``diagnostic_every`` steps
(:class:`TrainDiagnostics`); a warning when the returned twist is worse than no twist
(:func:`heldout_check`).

Steps are jitted ``optax`` updates; ``checkpoint=path`` saves the parameters, optimizer state and
step (safetensors) every ``checkpoint_every`` steps and resumes from the file when it exists. The
checkpoint records what it was trained for (:func:`lm_inference.twists.twist_record`: model, ``T``,
prompt, head, potential, method); resuming for anything else raises
:class:`lm_inference.twists.TwistMismatchError` instead of continuing the other target's twist.
"""

import os
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from kernels.types import Array, ArrayTree, PRNGKey
from lm_inference.target import Target
from lm_inference.twisted_smc import TeacherForced, smc, smc_runs, teacher_force
from lm_inference.twists import (
    Twist,
    check_record,
    head_twist,
    load_params,
    probability_twist,
    read_record,
    save_params,
    twist_record,
)

__all__ = [
    "METHODS",
    "TrainDiagnostics",
    "TrainResult",
    "heldout_check",
    "train_twist",
    "twist_loss",
]

METHODS = ("ctl", "sixo", "fudge", "rl", "dpg")


class TrainDiagnostics(NamedTuple):
    """Held-out diagnostics over training (:func:`train_twist`, ``diagnostic_every``).

    Every ``diagnostic_every`` steps (and at the start and the end) the current twist runs ``R``
    SMC sweeps of ``N`` particles on fixed held-out keys (never used for training), and so does
    the no-twist proposal once. ``log_mean_Z`` pools the ``R`` runs, ``log (1/R) sum_r Z_hat_r``:
    both proposals are unbiased for ``Z``, so a twist whose pooled estimate sits well below the
    no-twist one has a heavier-tailed ``Z_hat`` (it misses where ``sigma`` has mass).

    Attributes:
        steps: ``[K]`` the step after which each row was measured (0: the initial twist).
        log_Z: ``[K, R]`` held-out SMC ``log Z_hat`` per run.
        ess: ``[K, R]`` the final step's ESS per run, as a fraction of ``N``.
        log_mean_Z: ``[K]`` ``log (1/R) sum_r Z_hat_r``.
        log_mean_Z_se: ``[K]`` its delta-method standard error, ``sd(Z_hat) / (sqrt(R) mean)``.
        heldout_eubo: ``[K]`` mean ``log p0 phi / q`` on held-out exact samples
            (``= log Z + KL(sigma || q)`` in expectation, lower is better; NaN without
            ``exact_samples``); ``heldout_eubo_se`` its standard error.
        baseline_log_Z, baseline_ess: ``[R]`` the same for the no-twist proposal.
        baseline_log_mean_Z, baseline_log_mean_Z_se, baseline_eubo: floats.
        num_particles: ``N``.
    """

    steps: np.ndarray
    log_Z: np.ndarray
    ess: np.ndarray
    log_mean_Z: np.ndarray
    log_mean_Z_se: np.ndarray
    heldout_eubo: np.ndarray
    heldout_eubo_se: np.ndarray
    baseline_log_Z: np.ndarray
    baseline_ess: np.ndarray
    baseline_log_mean_Z: float
    baseline_log_mean_Z_se: float
    baseline_eubo: float
    num_particles: int


class TrainResult(NamedTuple):
    """The trained :class:`Twist`, the per-step losses and the held-out
    :class:`TrainDiagnostics` (``None`` with ``diagnostic_every=0``)."""

    twist: Twist
    losses: np.ndarray
    diagnostics: TrainDiagnostics | None = None


def _all_log_psi(apply, params, tf: TeacherForced, seqs):
    T = seqs.shape[1]
    lpsi = jax.vmap(lambda h, t: apply(params, h, seqs, t), in_axes=(1, 0), out_axes=1)(
        tf.hidden, jnp.arange(T)
    )
    return lpsi.astype(jnp.float32)  # [M, T, V]


def _at(x, seqs):
    return jnp.take_along_axis(x, seqs[..., None], axis=-1)[..., 0]


def _weights_sigma(tf: TeacherForced, exact: bool):
    m = tf.log_phi.shape[0]
    if exact:
        return jnp.full(m, 1.0 / m)
    return _softmax0(tf.log_weight(), 0)


def _softmax0(lw, axis):
    """Softmax with NaN as ``-inf`` and all-``-inf`` columns giving zero weights."""
    w = jax.nn.softmax(jnp.where(jnp.isnan(lw), -jnp.inf, lw), axis=axis)
    return jnp.where(jnp.isnan(w), 0.0, w)


def twist_loss(
    method: str,
    apply: Callable,
    params: ArrayTree,
    pos: tuple[Array, TeacherForced],
    neg: tuple[Array, TeacherForced],
    exact: bool,
) -> Array:
    """The training loss of ``method`` (see module docstring).

    Args:
        method: one of :data:`METHODS`.
        apply: the twist's ``apply``.
        params: twist parameters (differentiated).
        pos: ``(sequences [M, T], TeacherForced)`` positive batch (target samples, or proposal
            draws reweighted to ``sigma``).
        neg: ``(sequences, TeacherForced)`` proposal (``ctl``, ``rl``) or ``p0`` draws
            (``sixo``, ``fudge``).
        exact: whether ``pos`` holds exact ``sigma`` samples (uniform weights).
    """
    sp, tp = pos
    sn, tn = neg
    w_pos = jax.lax.stop_gradient(_weights_sigma(tp, exact))
    if method == "ctl":
        lp = _at(_all_log_psi(apply, params, tp, sp), sp) * tp.active
        ln = _at(_all_log_psi(apply, params, tn, sn), sn) * tn.active
        # intermediate weights p0 Phi_t psi_t / q (s_1:t) with the current twist (constants)
        lw = jnp.cumsum(tn.log_p0, 1) + tn.log_prefix + tn.log_psi - jnp.cumsum(tn.log_q, 1)
        w_neg = jax.lax.stop_gradient(_softmax0(lw, 0))
        return -(jnp.sum(w_pos[:, None] * lp) - jnp.sum(w_neg * ln))
    if method == "sixo":
        lp = _at(_all_log_psi(apply, params, tp, sp), sp)
        ln = _at(_all_log_psi(apply, params, tn, sn), sn)
        pos_term = jnp.sum(w_pos[:, None] * jax.nn.log_sigmoid(lp) * tp.active)
        neg_term = jnp.mean(jnp.sum(jax.nn.log_sigmoid(-ln) * tn.active, 1))
        return -(pos_term + neg_term)
    if method == "fudge":
        ln = _at(_all_log_psi(apply, params, tn, sn), sn)  # log sigmoid: <= 0
        y = jnp.clip(jnp.exp(tn.log_phi), 0.0, 1.0)[:, None]
        # log(1 - psi); the clip only guards log(0) where sigmoid rounds to 1 in float32
        bce = y * ln + (1 - y) * jnp.log(-jnp.expm1(jnp.minimum(ln, -1e-6)))
        return -jnp.mean(jnp.sum(bce * tn.active, 1))
    if method == "rl":
        lpsi_all = _all_log_psi(apply, params, tn, sn)
        ln = _at(lpsi_all, sn)
        nxt = jnp.concatenate([tn.log_norm[:, 1:], jnp.zeros_like(tn.log_norm[:, :1])], 1)
        nxt_active = jnp.concatenate([tn.active[:, 1:], jnp.zeros_like(tn.active[:, :1])], 1)
        target = jax.lax.stop_gradient(jnp.where(nxt_active, nxt, tn.log_phi[:, None]))
        finite = target > -jnp.inf
        sq = jnp.square(ln - jnp.where(finite, target, 0.0))
        # target psi = 0 (log phi = -inf, or no continuation with phi > 0): -log(1 - psi), the
        # cross-entropy of label 0 (psi = sigmoid(f) < 1; the clip only guards log(0) where
        # sigmoid rounds to 1 in float32)
        zero = -jnp.log(-jnp.expm1(jnp.minimum(ln, -1e-6)))
        return jnp.mean(jnp.sum(jnp.where(finite, sq, zero) * tn.active, 1))
    if method == "dpg":
        lpsi_all = _all_log_psi(apply, params, tp, sp)
        lq = _at(tp.log_p0_all + lpsi_all, sp) - jax.nn.logsumexp(tp.log_p0_all + lpsi_all, -1)
        return -jnp.sum(w_pos[:, None] * lq * tp.active)
    raise ValueError(f"twist_loss: unknown method {method!r}; choose one of {METHODS}.")


def _log_mean(log_z: np.ndarray) -> tuple[float, float]:
    """``log (1/R) sum_r Z_r`` and its delta-method standard error ``sd(Z) / (sqrt(R) mean(Z))``
    (``-inf`` and ``inf`` when every run gave ``Z_hat = 0``)."""
    lz = np.asarray(log_z, np.float64)
    if not np.any(np.isfinite(lz)):
        return -np.inf, np.inf
    top = np.max(lz[np.isfinite(lz)])
    w = np.where(np.isfinite(lz), np.exp(lz - top), 0.0)
    m = w.mean()
    se = float(w.std(ddof=1) / (np.sqrt(w.size) * m)) if w.size > 1 else np.inf
    return float(top + np.log(m)), se


def _diagnose(target, twist, keys, n, heldout):
    """``(log_Z [R], final ESS / N [R], held-out EUBO, its standard error)`` of ``twist``."""
    r = smc_runs(keys, target, n, twist=twist)
    lz = np.asarray(r.log_Z, np.float64)
    ess = np.nan_to_num(np.asarray(r.ess, np.float64)[:, -1] / n, nan=0.0)
    if heldout is None:
        return lz, ess, np.nan, np.nan
    lw = np.asarray(teacher_force(target, heldout, twist).log_weight(), np.float64)
    return lz, ess, float(lw.mean()), float(lw.std(ddof=1) / np.sqrt(lw.size))


def heldout_check(diag: TrainDiagnostics, method: str = "twist", z: float = 3.0) -> str | None:
    """A message when the last row of ``diag`` (the returned twist) is worse than the no-twist
    proposal on the held-out runs, else ``None``.

    Worse means any of (one-sided z-tests at ``z``): a pooled ``log (1/R) sum Z_hat`` below the
    no-twist one by more than ``z`` combined standard errors (or ``-inf`` where the no-twist
    one is finite); a mean final ESS below the no-twist one by more than ``z`` standard errors
    of the difference; a held-out EUBO (``log Z + KL(sigma || q)``) above the no-twist one by
    more than ``z`` standard errors (only with exact samples).
    """
    lm, se = float(diag.log_mean_Z[-1]), float(diag.log_mean_Z_se[-1])
    lm0, se0 = diag.baseline_log_mean_Z, diag.baseline_log_mean_Z_se
    reasons = []
    if np.isfinite(lm0) and (not np.isfinite(lm) or lm < lm0 - z * np.sqrt(se**2 + se0**2)):
        reasons.append(
            f"held-out log mean Z_hat {lm:.2f} (se {se:.2f}) vs {lm0:.2f} (se {se0:.2f}) "
            "without a twist"
        )
    e, e0 = diag.ess[-1], diag.baseline_ess
    se_e = np.sqrt(e.var(ddof=1) / e.size + e0.var(ddof=1) / e0.size) if e.size > 1 else 0.0
    if e.mean() < e0.mean() - z * se_e:
        reasons.append(
            f"mean final ESS {e.mean() * diag.num_particles:.1f} vs "
            f"{e0.mean() * diag.num_particles:.1f} of N = {diag.num_particles} without a twist"
        )
    g = float(diag.heldout_eubo[-1])
    if np.isfinite(g) and np.isfinite(diag.baseline_eubo):
        se_g = float(diag.heldout_eubo_se[-1])
        if g > diag.baseline_eubo + z * max(se_g, 1e-12):
            reasons.append(
                f"held-out EUBO (log Z + KL(sigma || q)) {g:.2f} (se {se_g:.2f}) vs "
                f"{diag.baseline_eubo:.2f} without a twist"
            )
    if not reasons:
        return None
    bad = int(np.sum(~np.isfinite(diag.log_Z[-1])))
    return (
        f"train_twist({method!r}): the trained twist is worse than no twist on "
        f"{diag.log_Z.shape[1]} held-out SMC runs at N = {diag.num_particles} (z = {z:g}): "
        + "; ".join(reasons)
        + f"; {bad} of {diag.log_Z.shape[1]} runs gave log Z_hat = -inf. Per-run log Z_hat: "
        f"twist {np.round(diag.log_Z[-1], 2).tolist()}, no twist "
        f"{np.round(diag.baseline_log_Z, 2).tolist()}. Fix: train longer or with a smaller "
        "learning rate, use a twist that sees the tokens so far (head_twist(..., prefix_size=64)), "
        "try another method (ctl), or use no twist; see result.diagnostics for the curve."
    )


def _draw(key, target, n, twist):
    """``n`` proposal draws (importance sampling: no resampling). A batch in which no draw has
    ``phi > 0`` is normal early in training on a rare event: ``smc``'s warning is muted."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="smc: every particle died")
        return smc(key, target, n, twist=twist, ess_threshold=0.0).samples


_STEPS = {}


def _step_fn(method, apply, optimizer, exact):
    key = (method, apply, id(optimizer), exact)
    if key not in _STEPS:

        @jax.jit
        def step(params, opt_state, pos, neg):
            loss, grads = jax.value_and_grad(
                lambda p: twist_loss(method, apply, p, pos, neg, exact)
            )(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        _STEPS[key] = step
    return _STEPS[key]


def train_twist(
    key: PRNGKey,
    target: Target,
    method: str = "ctl",
    twist: Twist | None = None,
    num_steps: int = 200,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    exact_samples: Array | None = None,
    optimizer: optax.GradientTransformation | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    kind: str = "mlp",
    diagnostic_every: int | None = None,
    diagnostic_runs: int = 8,
    diagnostic_particles: int | None = None,
    heldout_fraction: float = 0.25,
    exact_epochs: int = 1,
) -> TrainResult:
    """Train a twist for ``target`` (module docstring).

    Args:
        key: PRNG key.
        target: the target.
        method: ``"ctl"`` (default), ``"sixo"``, ``"fudge"``, ``"rl"`` or ``"dpg"``.
        twist: initial twist (default: a fresh zero-output :func:`lm_inference.twists.head_twist`
            of ``kind`` on the LM's hidden state).
        num_steps: optimizer steps (in total, counting resumed ones).
        batch_size: sequences per step.
        learning_rate: Adam learning rate (ignored with ``optimizer``).
        exact_samples: optional exact target samples for the positives: a ``[K, T]`` pool, used
            without replacement ``batch_size`` per step for ``exact_epochs`` passes, after which
            training continues with self-normalized proposal positives; or a function
            ``key -> [M, T]`` giving fresh exact samples every step (e.g. infilling's joint
            samples). Reusing a small pool for many passes memorizes it: on the embedded model
            and " king" (T = 10), 200 steps on a pool of 96 took the held-out
            ``KL(sigma || q)`` from 4.8 nats (no twist) to 51 and ``log Z_hat`` from -5 to -12.
        exact_epochs: passes over an ``exact_samples`` pool (module docstring).
        optimizer: an ``optax`` transformation (default Adam).
        checkpoint: path of a safetensors checkpoint to save to and resume from (resuming
            checks that it was trained for this target, twist head and method).
        checkpoint_every: save every this many steps (and at the end).
        progress: show a tqdm progress bar.
        kind: head kind for the default twist, ``"linear"`` or ``"mlp"``.
        diagnostic_every: measure the held-out :class:`TrainDiagnostics` every this many steps
            (default ``max(1, num_steps // 10)``; ``0``: no diagnostics and no warning).
        diagnostic_runs: ``R`` held-out SMC runs per measurement.
        diagnostic_particles: ``N`` of those runs (default ``batch_size``).
        heldout_fraction: with ``exact_samples`` and diagnostics, this fraction of them (at
            least 4) is held out of training for the held-out EUBO.

    Returns:
        :class:`TrainResult` ``(twist, losses, diagnostics)``.

    Warns:
        UserWarning: when the returned twist is worse than no twist on the held-out runs
            (:func:`heldout_check`, z = 3), naming the method and the figures.
    """
    if method not in METHODS:
        raise ValueError(f"train_twist: unknown method {method!r}; choose one of {METHODS}.")
    if num_steps < 0 or batch_size < 1:
        raise ValueError("train_twist: num_steps must be >= 0 and batch_size >= 1.")
    if diagnostic_every is not None and diagnostic_every < 0:
        raise ValueError("train_twist: diagnostic_every must be >= 0 (0: no diagnostics).")
    if diagnostic_runs < 2:
        raise ValueError("train_twist: diagnostic_runs must be >= 2 (a standard error needs 2).")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError("train_twist: heldout_fraction must be in [0, 1).")
    k_init, key = jax.random.split(key)
    k_diag = jax.random.fold_in(k_init, 1)  # held-out keys: never used for training
    if twist is None:
        twist = head_twist(
            k_init, target.lm.hidden_size, target.lm.vocab_size, target.num_tokens, kind=kind
        )
    if method in ("fudge", "rl"):
        twist = probability_twist(twist)
    optimizer = optax.adam(learning_rate) if optimizer is None else optimizer
    params = twist.params
    opt_state = optimizer.init(params)
    start = 0
    record = None if checkpoint is None else twist_record(target, twist, method=method)
    if checkpoint is not None and os.path.exists(checkpoint):
        check_record(
            read_record(checkpoint),
            record,
            checkpoint,
            fix=(
                "resuming would continue the twist trained for the other target; use a new "
                f"checkpoint path, or delete {os.fspath(checkpoint)} to start over."
            ),
        )
        like = {"params": params, "opt_state": opt_state, "step": jnp.zeros((), jnp.int32)}
        loaded = load_params(checkpoint, like)
        params, opt_state, start = loaded["params"], loaded["opt_state"], int(loaded["step"])
        if start >= num_steps:
            warnings.warn(
                f"train_twist: {os.fspath(checkpoint)} is already at step {start} >= num_steps = "
                f"{num_steps}; nothing to train, returning its twist (raise num_steps to train "
                "more).",
                stacklevel=2,
            )
    every = max(1, num_steps // 10) if diagnostic_every is None else int(diagnostic_every)
    if exact_epochs < 1:
        raise ValueError("train_twist: exact_epochs must be >= 1.")
    source = exact_samples if callable(exact_samples) else None
    pool, heldout, exact_steps, mb = None, None, 0, batch_size
    if source is not None:
        exact_steps = num_steps  # fresh exact samples every step
    elif exact_samples is not None:
        pool = target.check_tokens(exact_samples, "train_twist: exact_samples")
        k = pool.shape[0]
        if k == 0:
            raise ValueError(
                "train_twist: exact_samples is empty; pass at least one sample, or None to use "
                "self-normalized proposal positives."
            )
        h = max(4, int(round(heldout_fraction * k))) if heldout_fraction > 0 else 0
        if every and h and k - h >= 4:
            heldout, pool = pool[k - h :], pool[: k - h]
        mb = min(batch_size, pool.shape[0])
        per_epoch = pool.shape[0] // mb
        exact_steps = per_epoch * exact_epochs
    k_pool = jax.random.fold_in(k_init, 2)

    def exact_batch(i, k):
        """Step ``i``'s exact positives: fresh from ``source``, or the pool without replacement
        (each sample once per epoch, ``exact_epochs`` epochs)."""
        if source is not None:
            return target.check_tokens(source(k), "train_twist: exact_samples(key)")
        e, j = divmod(i, per_epoch)
        perm = jax.random.permutation(jax.random.fold_in(k_pool, e), pool.shape[0])
        return pool[perm[j * mb : (j + 1) * mb]]

    losses = []
    rows = []
    if every:
        n_diag = batch_size if diagnostic_particles is None else int(diagnostic_particles)
        diag_keys = jax.random.split(k_diag, diagnostic_runs)
        base = _diagnose(target, None, diag_keys, n_diag, heldout)

        def measure(i):
            rows.append(
                (i, *_diagnose(target, Twist(twist.apply, params), diag_keys, n_diag, heldout))
            )

        measure(start)

    def save(i):
        state = {"params": params, "opt_state": opt_state, "step": jnp.asarray(i, jnp.int32)}
        save_params(checkpoint, state, {"method": method}, record=record)

    bar = tqdm(range(start, num_steps), disable=not progress, desc=f"train twist ({method})")
    for i in bar:
        k = jax.random.fold_in(key, i)
        k1, k2, k3 = jax.random.split(k, 3)
        cur = Twist(twist.apply, params)
        # proposal draws (ctl, dpg and positives) or base-model draws (sixo, fudge, rl)
        use_p0 = method in ("sixo", "fudge", "rl")
        neg_seq = _draw(k1, target, batch_size, None if use_p0 else cur)
        neg = (neg_seq, teacher_force(target, neg_seq, cur))
        exact = i < exact_steps
        if exact:
            pos_seq = exact_batch(i, k2)
            pos = (pos_seq, teacher_force(target, pos_seq, cur))
        elif use_p0 and method != "rl":  # rl's loss uses the p0 draws only
            pos_seq = _draw(k3, target, batch_size, cur)
            pos = (pos_seq, teacher_force(target, pos_seq, cur))
        else:
            pos = neg
        step = _step_fn(method, twist.apply, optimizer, exact)
        params, opt_state, loss = step(params, opt_state, pos, neg)
        losses.append(float(loss))
        if every and ((i + 1) % every == 0 or i + 1 == num_steps):
            measure(i + 1)
        if progress:
            post = {"loss": f"{losses[-1]:.4g}"}
            if every and rows:
                post["heldout_logZ"] = f"{_log_mean(rows[-1][1])[0]:.3g}"
            bar.set_postfix(post, refresh=False)
        if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == num_steps):
            save(i + 1)
    diagnostics = None
    if every:
        lm0, se0 = _log_mean(base[0])
        pooled = [_log_mean(r[1]) for r in rows]
        diagnostics = TrainDiagnostics(
            steps=np.asarray([r[0] for r in rows]),
            log_Z=np.stack([r[1] for r in rows]),
            ess=np.stack([r[2] for r in rows]),
            log_mean_Z=np.asarray([p[0] for p in pooled]),
            log_mean_Z_se=np.asarray([p[1] for p in pooled]),
            heldout_eubo=np.asarray([r[3] for r in rows]),
            heldout_eubo_se=np.asarray([r[4] for r in rows]),
            baseline_log_Z=base[0],
            baseline_ess=base[1],
            baseline_log_mean_Z=lm0,
            baseline_log_mean_Z_se=se0,
            baseline_eubo=base[2],
            num_particles=n_diag,
        )
        if losses:  # something was trained: say so if it made the proposal worse
            msg = heldout_check(diagnostics, method)
            if msg is not None:
                warnings.warn(msg, UserWarning, stacklevel=2)
    return TrainResult(Twist(twist.apply, params), np.asarray(losses), diagnostics)
