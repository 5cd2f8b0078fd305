"""LLaMPPL's short-words constraint on device against the host definition."""

import numpy as np

from lm_inference import exact, potentials
from lm_inference.potentials.words import max_word_length, word_stats
from lm_inference.target import Target
from tests.lm_inference._text import text_lm
from tests.lm_inference.potentials._common import exact_identity, text, z_unbiased


def test_word_stats():
    st = word_stats([b"ab", b" ", b"ab cd", b"a.bcd e", None])
    np.testing.assert_array_equal(st["has_break"], [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(st["length"], [2, 0, 0, 0, 0])
    np.testing.assert_array_equal(st["lead"], [0, 0, 2, 1, 0])
    np.testing.assert_array_equal(st["trail"], [0, 0, 2, 1, 0])
    np.testing.assert_array_equal(st["inner"], [0, 0, 0, 3, 0])


def test_short_words_mask_equals_host_definition_and_unbiased():
    lm = text_lm(0)
    for k in (1, 2, 3):
        for mask in (True, False):
            target = Target(lm, [0], 4, potentials.short_words(lm, k, mask=mask))
            en = exact.enumerate_target(target)
            want = np.array([max_word_length(text(s)) <= k for s in np.asarray(en.sequences)])
            np.testing.assert_array_equal(np.isfinite(np.asarray(en.log_phi)), want)
    target = Target(lm, [0], 4, potentials.short_words(lm, 2))
    q, eqw, Z = exact_identity(target)
    np.testing.assert_allclose([q, eqw], [1.0, Z], rtol=1e-5)
    assert abs(z_unbiased(target, 4, 2000, 0, float(np.log(Z)))) < 4  # z-score


def test_llamppl_rule_matches_host_reference_on_every_sequence():
    """The on-device state machine equals LLaMPPL's rule evaluated on the decoded text, for every
    enumerated sequence of a vocabulary with spaces, multi-word and punctuation tokens."""
    from lm_inference.potentials.words import llamppl_allowed, llamppl_short_words

    strs = ["ab", "b", "abc", " ", " ab", "a b", None, ".", "abab", "\n"]  # 6: the EOS id
    lm = text_lm(0, vocab_size=len(strs))
    pot = llamppl_short_words(lm, 3, tokens=strs)
    target = Target(lm, [0], 3, pot, eos_token_id=-1)
    en = exact.enumerate_target(target)
    for seq, lp in zip(np.asarray(en.sequences), np.asarray(en.log_phi), strict=True):
        text, ok = "", True
        for s in seq:
            ok = ok and llamppl_allowed(text, strs[s], 3)
            text += strs[s] or ""
        assert ok == np.isfinite(lp), (seq, text)
