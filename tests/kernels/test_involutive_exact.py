"""Exact invariance pi P = pi of involutive kernels on a finite state space.

The transition matrix is built from the same functions that ``kernels.involutive.step`` runs
(``transition`` for the proposal and log ratio, ``accept_reject`` for the next state, the move's
``aux_logdensity`` for the auxiliary probabilities), by enumerating the auxiliary variable and the
accept/reject outcome. Negative controls show the check detects a wrong move.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels.involutive as inv

N = 9  # states
STEPS = np.array([-2, -1, 1, 2])  # shift move: v indexes STEPS, flip k -> 3 - k


def _tables():
    rng = np.random.default_rng(1)
    log_pi = rng.normal(size=N)
    log_pi -= np.log(np.sum(np.exp(log_pi)))
    log_q_shift = rng.normal(size=(N, 4))  # p(k | x), state dependent
    log_q_shift -= np.log(np.sum(np.exp(log_q_shift), 1, keepdims=True))
    log_q_reflect = np.full((N, 4), -np.inf)  # p(k | x) on {0, 1}
    r = rng.normal(size=(N, 2))
    log_q_reflect[:, :2] = r - np.log(np.sum(np.exp(r), 1, keepdims=True))
    log_q_lift = np.full((N, 4), -np.inf)  # forward step sizes {1, 2}
    r = rng.normal(size=(N, 2))
    log_q_lift[:, :2] = r - np.log(np.sum(np.exp(r), 1, keepdims=True))
    mix_w = rng.normal(size=(N, 4, 2))  # state-dependent mixture log-weights over 2 moves
    return log_pi, log_q_shift, log_q_reflect, log_q_lift, mix_w


def _moves(wrong_jacobian=False, non_involution=False):
    log_pi, log_q_shift, log_q_reflect, log_q_lift, mix_w = map(jnp.asarray, _tables())
    steps = jnp.asarray(STEPS)

    def logp(x):
        return log_pi[x]

    def categorical_aux(table):
        return (
            lambda key, x: jax.random.categorical(key, table[x]),
            lambda k, x: table[x, k],
        )

    def shift(x, k):
        log_det = 0.3 if wrong_jacobian else 0.0
        k_new = k if non_involution else 3 - k
        return (x + steps[k]) % N, k_new, log_det

    def reflect(x, k):
        return (k - x) % N, k, 0.0

    lift_steps = jnp.asarray([1, 2, 0, 0])

    def forward(x, k):
        return (x + lift_steps[k]) % N, k, 0.0

    def backward(x, k):
        return (x - lift_steps[k]) % N, k, 0.0

    shift_move = inv.from_involution(logp, *categorical_aux(log_q_shift), shift)
    reflect_move = inv.from_involution(logp, *categorical_aux(log_q_reflect), reflect)
    fwd = inv.from_involution(logp, *categorical_aux(log_q_lift), forward)
    bwd = inv.from_involution(logp, *categorical_aux(log_q_lift), backward)
    sdm = inv.state_dependent_mixture(
        [shift_move, inv.from_involution(logp, *categorical_aux(log_q_shift), reflect)],
        lambda x, k: mix_w[x, k],
    )
    return {
        "plain": shift_move,
        "mixture": inv.mixture([shift_move, reflect_move], jnp.array([0.3, 0.7])),
        "state_dependent_mixture": sdm,
        "lifted": inv.lifted(fwd, bwd),
    }, log_pi


def _candidates(name, d):
    """Auxiliary values to enumerate at a state with direction d (lifted) or None."""
    k = jnp.arange(4)
    if name == "mixture":
        t, k = jnp.meshgrid(jnp.arange(2), k, indexing="ij")
        return t.ravel(), k.ravel()
    if name == "state_dependent_mixture":
        k, t = jnp.meshgrid(k, jnp.arange(2), indexing="ij")
        return k.ravel(), t.ravel()
    if name == "lifted":
        return k, jnp.full(4, d)
    return k


def _transition_matrix(move, log_pi, name, law=None):
    """P from ``move``; auxiliary probabilities from ``law`` (default: the move's own)."""
    law = law or move
    lifted = name == "lifted"
    directions = [1, -1] if lifted else [None]
    states, cands = [], []
    for d in directions:
        for x in range(N):
            aux = None if d is None else jnp.asarray(d, jnp.int32)
            states.append(inv.InvolutiveState(jnp.asarray(x), log_pi[x], None, aux))
            cands.append(_candidates(name, d))
    states = jax.tree.map(lambda *a: jnp.stack(a), *states)
    cands = jax.tree.map(lambda *a: jnp.stack(a), *cands)

    def index(state):
        return state.position + (N * (state.aux < 0) if lifted else 0)

    def one(state, aux):
        q = jnp.exp(law.aux_logdensity(aux, state))
        proposal, v_new, log_ratio = inv.transition(move, state, aux)
        a = jnp.exp(jnp.minimum(log_ratio, 0.0))
        acc = inv.accept_reject(move, state, aux, proposal, v_new, jnp.bool_(True))
        rej = inv.accept_reject(move, state, aux, proposal, v_new, jnp.bool_(False))
        return q, a, index(acc), index(rej)

    q, a, i_acc, i_rej = jax.jit(jax.vmap(jax.vmap(one, (None, 0)), (0, 0)))(states, cands)
    q, a, i_acc, i_rej = map(np.asarray, (q, a, i_acc, i_rej))
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)  # auxiliary probabilities complete
    size = len(states.position)
    P = np.zeros((size, size))
    rows = np.repeat(np.arange(size)[:, None], q.shape[1], 1)
    np.add.at(P, (rows, i_acc), q * a)
    np.add.at(P, (rows, i_rej), q * (1 - a))
    pi = np.exp(np.asarray(log_pi))
    pi = np.concatenate([pi / 2, pi / 2]) if lifted else pi
    return P, pi


@pytest.mark.parametrize("name", ["plain", "mixture", "state_dependent_mixture", "lifted"])
def test_exact_invariance(name):
    with jax.enable_x64(True):
        moves, log_pi = _moves()
        P, pi = _transition_matrix(moves[name], log_pi, name)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
    assert np.max(np.abs(pi @ P - pi)) < 1e-10
    assert np.max(np.abs(P - np.eye(len(pi)))) > 0.05  # the kernel moves


def test_lifted_chain_is_irreversible():
    with jax.enable_x64(True):
        moves, log_pi = _moves()
        P, pi = _transition_matrix(moves["lifted"], log_pi, "lifted")
    flux = pi[:, None] * P
    assert np.max(np.abs(flux - flux.T)) > 1e-3  # no detailed balance, yet pi P = pi above


@pytest.mark.parametrize(
    "bug, name",
    [
        ({"wrong_jacobian": True}, "plain"),
        ({"non_involution": True}, "plain"),
        ({"wrong_jacobian": True}, "mixture"),
        ({}, "state_dependent_mixture_without_ratio"),
    ],
)
def test_negative_controls_break_invariance(bug, name):
    with jax.enable_x64(True):
        moves, log_pi = _moves(**bug)
        if name == "state_dependent_mixture_without_ratio":
            sdm = moves["state_dependent_mixture"]
            base = moves["plain"]
            # forget the p(t | f(x, v)) / p(t | x, v) term: sample t as before, drop it in the ratio
            move = sdm._replace(aux_logdensity=lambda aux, s: base.aux_logdensity(aux[0], s))
            name, law = "state_dependent_mixture", sdm
        else:
            move, law = moves[name], None
        P, pi = _transition_matrix(move, log_pi, name, law)
    assert np.max(np.abs(pi @ P - pi)) > 1e-3


@pytest.mark.parametrize("name", ["mixture", "state_dependent_mixture"])
def test_aux_sampler_matches_aux_logdensity(name):
    """step draws the auxiliary variable with sample_aux: its law must be exp(aux_logdensity)."""
    moves, log_pi = _moves()
    move = moves[name]
    x = 4
    state = inv.InvolutiveState(jnp.asarray(x), jnp.asarray(log_pi[x], jnp.float32))
    n = 20000
    keys = jax.random.split(jax.random.key(3), n)
    draws = jax.jit(jax.vmap(move.sample_aux, (0, None)))(keys, state)
    cands = _candidates(name, None)
    probs = np.exp(np.asarray(jax.vmap(move.aux_logdensity, (0, None))(cands, state)))
    for i in range(len(probs)):
        hit = np.ones(n, bool)
        for leaf_draw, leaf_c in zip(jax.tree.leaves(draws), jax.tree.leaves(cands), strict=True):
            hit &= np.asarray(leaf_draw) == int(leaf_c[i])
        se = np.sqrt(probs[i] * (1 - probs[i]) / n) + 1e-12
        z = (hit.mean() - probs[i]) / se
        assert abs(z) < 4 or (probs[i] == 0 and hit.sum() == 0)  # z-score
