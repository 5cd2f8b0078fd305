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


def _leaves(log_pi, log_q_shift, log_q_reflect, log_q_lift, wrong_jacobian, non_involution):
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

    return {
        "shift": inv.from_involution(logp, *categorical_aux(log_q_shift), shift),
        "reflect": inv.from_involution(logp, *categorical_aux(log_q_reflect), reflect),
        "reflect_q_shift": inv.from_involution(logp, *categorical_aux(log_q_shift), reflect),
        "forward": inv.from_involution(logp, *categorical_aux(log_q_lift), forward),
        "backward": inv.from_involution(logp, *categorical_aux(log_q_lift), backward),
    }


# A spec is a leaf name or (combinator, *specs). "lift" takes (forward, backward) specs,
# "mix" and "sdm" two specs (sdm's two share the first one's auxiliary law and slot layout).
DEPTH_ONE = {
    "plain": "shift",
    "mixture": ("mix", "shift", "reflect"),
    "state_dependent_mixture": ("sdm", "shift", "reflect_q_shift"),
    "lifted": ("lift", "forward", "backward"),
}


def _nested(outer: str, inner: str):
    """outer(inner(...)) with the leaves of DEPTH_ONE; an involution serves as its own inverse."""
    a = DEPTH_ONE[inner]
    if outer == "mixture":
        return ("mix", a, "reflect")
    if outer == "state_dependent_mixture":
        # the second move acts on the first one's auxiliary space (same layout, other involution)
        b = {
            "plain": "reflect_q_shift",
            "mixture": ("mix", "reflect", "shift"),
            "state_dependent_mixture": ("sdm", "reflect_q_shift", "shift"),
            "lifted": ("lift", "backward", "forward"),
        }[inner]
        return ("sdm", a, b)
    if inner == "lifted":  # a lifted chain is an involution on (x, v, d): lift it with itself
        return ("lift", a, a)
    inverse = {
        "plain": "shift",
        "mixture": ("mix", "shift", "reflect"),
        "state_dependent_mixture": ("sdm", "shift", "reflect_q_shift"),
    }[inner]
    if inner != "plain":  # lifting a move built from the forward/backward bijections
        a = ("mix", "forward", "reflect") if inner == "mixture" else a
        inverse = ("mix", "backward", "reflect") if inner == "mixture" else inverse
    return ("lift", a, inverse)


def _build(spec, leaves, mix_w):
    if isinstance(spec, str):
        return leaves[spec]
    name, *parts = spec
    moves = [_build(p, leaves, mix_w) for p in parts]
    if name == "mix":
        return inv.mixture(moves, jnp.array([0.3, 0.7]))
    if name == "sdm":
        return inv.state_dependent_mixture(moves, lambda x, v: mix_w[x, jax.tree.leaves(v)[0]])
    return inv.lifted(*moves)


def _slots(spec):
    """Every value of the persistent state of ``spec`` (uniform under the invariant law)."""
    if isinstance(spec, str):
        return [None]
    name, *parts = spec
    if name == "mix":
        return [(a, b) for a in _slots(parts[0]) for b in _slots(parts[1])]
    if name == "sdm":
        return _slots(parts[0])
    return [(jnp.asarray(d, jnp.int32), s) for d in (1, -1) for s in _slots(parts[0])]


def _zeros(v):
    return jax.tree.map(jnp.zeros_like, v)


def _candidates(spec, slot):
    """Every auxiliary value the move can draw at persistent state ``slot``."""
    if isinstance(spec, str):
        return [jnp.asarray(k) for k in range(4)]
    name, *parts = spec
    if name == "mix":
        ca, cb = _candidates(parts[0], slot[0]), _candidates(parts[1], slot[1])
        za, zb = _zeros(ca[0]), _zeros(cb[0])
        return [(jnp.asarray(0, jnp.int32), (v, zb)) for v in ca] + [
            (jnp.asarray(1, jnp.int32), (za, v)) for v in cb
        ]
    if name == "sdm":
        return [(v, jnp.asarray(t, jnp.int32)) for v in _candidates(parts[0], slot) for t in (0, 1)]
    return [(v, slot[0]) for v in _candidates(parts[0], slot[1])]


def _moves(wrong_jacobian=False, non_involution=False):
    log_pi, log_q_shift, log_q_reflect, log_q_lift, mix_w = map(jnp.asarray, _tables())
    leaves = _leaves(log_pi, log_q_shift, log_q_reflect, log_q_lift, wrong_jacobian, non_involution)
    return {name: _build(spec, leaves, mix_w) for name, spec in DEPTH_ONE.items()}, log_pi


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _key(position, aux):
    return tuple(int(a) for a in np.ravel(position)) + tuple(int(a) for a in jax.tree.leaves(aux))


def _transition_matrix(move, log_pi, spec, law=None):
    """P on (x, persistent state) from ``move``; auxiliary law from ``law`` (default: the move)."""
    law = law or move
    slots = _slots(spec)
    states, cands = [], []
    for slot in slots:
        for x in range(N):
            states.append(inv.InvolutiveState(jnp.asarray(x), log_pi[x], None, slot))
            cands.append(_stack(_candidates(spec, slot)))
    index = {_key(s.position, s.aux): i for i, s in enumerate(states)}
    states, cands = _stack(states), _stack(cands)

    def one(state, aux):
        q = jnp.exp(law.aux_logdensity(aux, state))
        proposal, v_new, log_ratio = inv.transition(move, state, aux)
        a = jnp.exp(jnp.minimum(log_ratio, 0.0))
        acc = inv.accept_reject(move, state, aux, proposal, v_new, jnp.bool_(True))
        rej = inv.accept_reject(move, state, aux, proposal, v_new, jnp.bool_(False))
        return q, a, (acc.position, acc.aux), (rej.position, rej.aux)

    q, a, acc, rej = jax.jit(jax.vmap(jax.vmap(one, (None, 0)), (0, 0)))(states, cands)
    q, a = np.asarray(q), np.asarray(a)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)  # auxiliary probabilities complete
    size, width = q.shape

    def indices(nxt):
        pos, aux = jax.tree.map(np.asarray, nxt)
        aux_leaves = jax.tree.leaves(aux)
        out = np.zeros((size, width), int)
        for i in range(size):
            for j in range(width):
                out[i, j] = index[_key(pos[i, j], [leaf[i, j] for leaf in aux_leaves])]
        return out

    i_acc, i_rej = indices(acc), indices(rej)
    P = np.zeros((size, size))
    rows = np.repeat(np.arange(size)[:, None], width, 1)
    np.add.at(P, (rows, i_acc), q * a)
    np.add.at(P, (rows, i_rej), q * (1 - a))
    pi = np.tile(np.exp(np.asarray(log_pi)), len(slots)) / len(slots)
    return P, pi


def _check_invariant(move, log_pi, spec):
    P, pi = _transition_matrix(move, log_pi, spec)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
    assert np.max(np.abs(pi @ P - pi)) < 1e-10
    assert np.max(np.abs(P - np.eye(len(pi)))) > 0.05  # the kernel moves
    return P, pi


@pytest.mark.parametrize("name", list(DEPTH_ONE))
def test_exact_invariance(name):
    with jax.enable_x64(True):
        moves, log_pi = _moves()
        _check_invariant(moves[name], log_pi, DEPTH_ONE[name])


NESTINGS = [(o, i) for o in DEPTH_ONE if o != "plain" for i in DEPTH_ONE if i != "plain"]


@pytest.mark.parametrize("outer, inner", NESTINGS)
def test_exact_invariance_nested(outer, inner):
    """Every depth-two nesting of mixture, state-dependent mixture and lifted: pi P = pi."""
    with jax.enable_x64(True):
        log_pi, log_q_shift, log_q_reflect, log_q_lift, mix_w = map(jnp.asarray, _tables())
        leaves = _leaves(log_pi, log_q_shift, log_q_reflect, log_q_lift, False, False)
        spec = _nested(outer, inner)
        _check_invariant(_build(spec, leaves, mix_w), log_pi, spec)


def test_nested_negative_control_breaks_invariance():
    """Lifting a mixture with the forward bijection as its own inverse is wrong: detected."""
    with jax.enable_x64(True):
        log_pi, log_q_shift, log_q_reflect, log_q_lift, mix_w = map(jnp.asarray, _tables())
        leaves = _leaves(log_pi, log_q_shift, log_q_reflect, log_q_lift, False, False)
        spec = ("lift", ("mix", "forward", "reflect"), ("mix", "forward", "reflect"))
        P, pi = _transition_matrix(_build(spec, leaves, mix_w), log_pi, spec)
    assert np.max(np.abs(pi @ P - pi)) > 1e-3


def test_lifted_chain_is_irreversible():
    with jax.enable_x64(True):
        moves, log_pi = _moves()
        P, pi = _transition_matrix(moves["lifted"], log_pi, DEPTH_ONE["lifted"])
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
        P, pi = _transition_matrix(move, log_pi, DEPTH_ONE[name], law)
    assert np.max(np.abs(pi @ P - pi)) > 1e-3


@pytest.mark.parametrize(
    "spec",
    [DEPTH_ONE["mixture"], DEPTH_ONE["state_dependent_mixture"], _nested("mixture", "lifted")]
    + [_nested("state_dependent_mixture", "mixture"), _nested("lifted", "mixture")],
    ids=str,
)
def test_aux_sampler_matches_aux_logdensity(spec):
    """step draws the auxiliary variable with sample_aux: its law must be exp(aux_logdensity)."""
    log_pi, log_q_shift, log_q_reflect, log_q_lift, mix_w = map(jnp.asarray, _tables())
    move = _build(
        spec, _leaves(log_pi, log_q_shift, log_q_reflect, log_q_lift, False, False), mix_w
    )
    x = 4
    slot = _slots(spec)[-1]
    state = inv.InvolutiveState(jnp.asarray(x), jnp.asarray(log_pi[x], jnp.float32), None, slot)
    n = 20000
    keys = jax.random.split(jax.random.key(3), n)
    draws = jax.jit(jax.vmap(move.sample_aux, (0, None)))(keys, state)
    cands = _stack(_candidates(spec, slot))
    probs = np.exp(np.asarray(jax.vmap(move.aux_logdensity, (0, None))(cands, state)))
    assert abs(probs.sum() - 1) < 1e-5
    for i in range(len(probs)):
        hit = np.ones(n, bool)
        for leaf_draw, leaf_c in zip(jax.tree.leaves(draws), jax.tree.leaves(cands), strict=True):
            hit &= np.asarray(leaf_draw) == int(leaf_c[i])
        se = np.sqrt(probs[i] * (1 - probs[i]) / n) + 1e-12
        z = (hit.mean() - probs[i]) / se
        assert abs(z) < 4 or (probs[i] == 0 and hit.sum() == 0)  # z-score
