"""Regex / JSON-schema automata: masks against Python's ``re`` on every enumerated sequence,
unbiased log Z_hat, zero-variance optimal twists, bounds that bracket, memory budget."""

import json

import jax
import numpy as np
import pytest

from lm_inference import bidirectional_bounds, exact, potentials
from lm_inference.potentials import automata
from lm_inference.target import Target
from tests.lm_inference._text import EOS, text_lm
from tests.lm_inference.potentials._common import brute_regex, exact_identity, z_unbiased

PATTERNS = [r"(a|b)+( a)?\.", r"a( ab)*", r"[ab]{2,3}", r"(ab|b)*\.?"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("vocab_size", [7, 9])  # 9: a model vocabulary larger than the tokenizer's
def test_mask_equals_brute_force_re(pattern, vocab_size):
    lm = text_lm(0, vocab_size)
    target = Target(lm, [0], 4, potentials.regex(lm, pattern))
    en = exact.enumerate_target(target)
    match = brute_regex(pattern, en.sequences)
    assert match.any() and not match.all()
    np.testing.assert_array_equal(np.isfinite(np.asarray(en.log_phi)), match)
    np.testing.assert_array_equal(np.asarray(en.log_phi)[match], 0.0)
    dfa = target.potential.info["dfa"]
    pot = target.potential
    assert "allowed" in pot.params  # the per-state row table; and the class gather without it
    gathered = automata._dfa_potential(dfa, "gather", {}, row_bytes=0)
    assert "allowed" not in gathered.params
    for st in range(dfa.dead + 1):
        allowed = dfa.allowed(st)
        for p in (pot, gathered):
            lw = np.asarray(p.logw_next(p.params, jax.numpy.int32(st), 0))
            np.testing.assert_array_equal(lw, np.where(allowed, 0.0, -np.inf))
        if st == dfa.dead:
            assert not allowed.any()
            continue
        assert allowed[EOS] == dfa.final[st]  # EOS only in accepting states
        assert not allowed[7:].any()  # ids the tokenizer lacks are never allowed


def test_unbiased_and_forced_eos_and_optimal_twist_zero_variance():
    lm = text_lm(0)
    for forced in (False, True):
        target = Target(lm, [0], 4, potentials.regex(lm, PATTERNS[0]), forced_eos=forced)
        en = exact.enumerate_target(target)
        # forced EOS: genlm-control's p(s EOS) 1[match]: log phi includes log p0(EOS | s)
        q_mass, eq_w, Z = exact_identity(target)
        np.testing.assert_allclose([q_mass, eq_w], [1.0, Z], rtol=1e-5)
        z = z_unbiased(target, 4, 2000, 1 + forced, float(en.log_Z))
        assert abs(z) < 4  # z-score
        tw = exact.optimal_twist(target, en)
        for thr in (0.0, 1.0):
            keys = jax.random.split(jax.random.key(2), 8)
            from lm_inference.twisted_smc import smc_runs

            lz = smc_runs(keys, target, 8, twist=tw, ess_threshold=thr).log_Z
            np.testing.assert_allclose(lz, en.log_Z, atol=3e-5)  # zero variance


def test_forced_eos_target_is_p_s_eos():
    lm = text_lm(0)
    plain = Target(lm, [0], 3, potentials.regex(lm, PATTERNS[1]))
    forced = Target(lm, [0], 3, potentials.regex(lm, PATTERNS[1]), forced_eos=True)
    ep, ef = exact.enumerate_target(plain), exact.enumerate_target(forced)
    full = np.asarray(ep.sequences)[:, -1] != EOS
    # sequences without EOS get log p0(EOS | s) from the forced EOS; others are unchanged
    lp = jax.nn.log_softmax(lm.logits(np.concatenate([np.zeros((full.sum(), 1), int),
                                                       np.asarray(ep.sequences)[full]], 1)), -1)
    eos_lp = np.asarray(lp[:, -1, EOS])
    m = np.isfinite(np.asarray(ep.log_phi))[full]
    np.testing.assert_allclose(np.asarray(ef.log_phi)[full][m],
                               np.asarray(ep.log_phi)[full][m] + eos_lp[m], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ef.log_phi)[~full], np.asarray(ep.log_phi)[~full])


def test_bounds_bracket_log_Z():
    lm = text_lm(0)
    target = Target(lm, [0], 4, potentials.regex(lm, PATTERNS[0]))
    en = exact.enumerate_target(target)
    refs = exact.exact_samples(jax.random.key(4), en, 64)
    b = bidirectional_bounds(jax.random.key(5), target, refs, 4)
    assert b.lower.lo <= float(en.log_Z) + 1e-6 and b.lower.mean <= float(en.log_Z) + 0.05
    assert b.upper.mean >= float(en.log_Z) - 0.05
    assert b.lower.mean <= b.upper.mean


def test_rejection_samples_exact_with_mask():
    from lm_inference.bounds import rejection_samples
    from tests.lm_inference.potentials._common import chi2_pvalue

    lm = text_lm(0)
    target = Target(lm, [0], 4, potentials.regex(lm, PATTERNS[0]))
    en = exact.enumerate_target(target)
    s = rejection_samples(jax.random.key(6), target, 4000)
    assert brute_regex(PATTERNS[0], s).all()
    assert chi2_pvalue(s, en.sequences, np.exp(np.asarray(en.log_sigma, np.float64)), 7) > 1e-3


def test_memory_budget_error_names_size():
    lm = text_lm(0)
    with pytest.raises(ValueError, match=r"states x \d+ token classes.*max_bytes"):
        potentials.regex(lm, r"[ab]{1,300}", max_bytes=2_000)
    with pytest.raises(ValueError, match="cannot compile"):
        potentials.regex(lm, r"(a")


def test_json_schema_on_embedded_model_all_samples_valid():
    jsonschema = pytest.importorskip("jsonschema")
    from lm_inference import load
    from lm_inference.twisted_smc import smc

    lm = load()
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 4}, "ok": {"type": "boolean"}},
        "required": ["name", "ok"],
    }
    pot = potentials.json_schema(lm, schema)
    assert pot.info["nbytes"] < 2**20
    target = Target(lm, "ROMEO.\n", 40, pot)
    r = smc(jax.random.key(0), target, 16)
    alive = np.isfinite(np.asarray(r.log_weights))
    assert alive.sum() >= 8  # the tiny model needs about 30 tokens for one document
    for text in np.array(target.decode(r.samples))[alive]:
        jsonschema.validate(json.loads(text), schema)  # 100 % of the weighted samples


def test_twist_training_on_a_constrained_target():
    """CTL on a regex target (masked proposal): the trained twist lowers the exact
    KL(sigma || q) of the proposal and twisted SMC stays unbiased."""
    from lm_inference.twist_training import train_twist

    lm = text_lm(0)
    target = Target(lm, [0], 4, potentials.regex(lm, PATTERNS[0]))
    en = exact.enumerate_target(target)
    tw = train_twist(jax.random.key(7), target, "ctl", num_steps=150, progress=False).twist
    before, after = exact.exact_kls(target, None, en), exact.exact_kls(target, tw, en)
    assert after[1] < 0.5 * before[1], (before, after)
    assert abs(z_unbiased(target, 4, 2000, 8, float(en.log_Z), twist=tw)) < 4  # z-score
