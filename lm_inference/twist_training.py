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
  ``(log psi_T - log phi)^2`` at the last step, on proposal draws.
- ``"dpg"`` (distributional policy gradient, Parshakova et al. 2019): maximize
  ``E_sigma[log q(s)]``, i.e. minimize ``KL(sigma || q)`` over the twist-induced proposal.

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
from lm_inference.twisted_smc import TeacherForced, smc, teacher_force
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

__all__ = ["METHODS", "TrainResult", "train_twist", "twist_loss"]

METHODS = ("ctl", "sixo", "fudge", "rl", "dpg")


class TrainResult(NamedTuple):
    """The trained :class:`Twist` and the per-step losses."""

    twist: Twist
    losses: np.ndarray


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
        log_phi = jnp.clip(tn.log_phi, -50.0, None)[:, None]
        nxt = jnp.concatenate([tn.log_norm[:, 1:], jnp.zeros_like(tn.log_norm[:, :1])], 1)
        nxt_active = jnp.concatenate([tn.active[:, 1:], jnp.zeros_like(tn.active[:, :1])], 1)
        target = jax.lax.stop_gradient(jnp.where(nxt_active, nxt, log_phi))
        return jnp.mean(jnp.sum(jnp.square(ln - target) * tn.active, 1))
    if method == "dpg":
        lpsi_all = _all_log_psi(apply, params, tp, sp)
        lq = _at(tp.log_p0_all + lpsi_all, sp) - jax.nn.logsumexp(tp.log_p0_all + lpsi_all, -1)
        return -jnp.sum(w_pos[:, None] * lq * tp.active)
    raise ValueError(f"twist_loss: unknown method {method!r}; choose one of {METHODS}.")


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
        exact_samples: optional ``[K, T]`` exact target samples used as positives (resampled
            ``batch_size`` per step).
        optimizer: an ``optax`` transformation (default Adam).
        checkpoint: path of a safetensors checkpoint to save to and resume from (resuming
            checks that it was trained for this target, twist head and method).
        checkpoint_every: save every this many steps (and at the end).
        progress: show a tqdm progress bar.
        kind: head kind for the default twist, ``"linear"`` or ``"mlp"``.

    Returns:
        :class:`TrainResult` ``(twist, losses)``.
    """
    if method not in METHODS:
        raise ValueError(f"train_twist: unknown method {method!r}; choose one of {METHODS}.")
    if num_steps < 0 or batch_size < 1:
        raise ValueError("train_twist: num_steps must be >= 0 and batch_size >= 1.")
    k_init, key = jax.random.split(key)
    if twist is None:
        twist = head_twist(
            k_init, target.lm.hidden_size, target.lm.vocab_size, target.num_tokens, kind=kind
        )
    if method == "fudge":
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
    exact = exact_samples is not None
    if exact:
        exact_samples = jnp.asarray(exact_samples, jnp.int32)
    step = _step_fn(method, twist.apply, optimizer, exact)
    losses = []

    def save(i):
        state = {"params": params, "opt_state": opt_state, "step": jnp.asarray(i, jnp.int32)}
        save_params(checkpoint, state, {"method": method}, record=record)

    bar = tqdm(range(start, num_steps), disable=not progress, desc=f"train twist ({method})")
    for i in bar:
        k = jax.random.fold_in(key, i)
        k1, k2, k3 = jax.random.split(k, 3)
        cur = Twist(twist.apply, params)
        # proposal draws (ctl, rl, dpg and positives) or base-model draws (sixo, fudge)
        use_p0 = method in ("sixo", "fudge")
        neg_seq = smc(
            k1, target, batch_size, twist=None if use_p0 else cur, ess_threshold=0.0
        ).samples
        neg = (neg_seq, teacher_force(target, neg_seq, cur))
        if exact:
            idx = jax.random.randint(k2, (batch_size,), 0, exact_samples.shape[0])
            pos_seq = exact_samples[idx]
            pos = (pos_seq, teacher_force(target, pos_seq, cur))
        elif use_p0:
            pos_seq = smc(k3, target, batch_size, twist=cur, ess_threshold=0.0).samples
            pos = (pos_seq, teacher_force(target, pos_seq, cur))
        else:
            pos = neg
        params, opt_state, loss = step(params, opt_state, pos, neg)
        losses.append(float(loss))
        if progress:
            bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == num_steps):
            save(i + 1)
    return TrainResult(Twist(twist.apply, params), np.asarray(losses))
