"""Ancestral sampling frequencies match the model's softmax (chi-square), and exact log-probabilities.

Chi-square tests: cells with expected count < 5 are merged into one; the test fails when the
statistic's upper-tail p-value is below 1e-4 (a fixed seed makes each test deterministic; a correct
sampler fails it with probability 1e-4).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import lm_inference
from tests.lm_inference._hf import V, checkpoint

PROMPT = np.array([3, 4, 5], np.int32)


@pytest.fixture(scope="module")
def lm():
    return lm_inference.load(checkpoint("gpt2")[0])


def _chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    n = counts.sum()
    expected = n * probs
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        assert obs[-1] == 0, "samples outside the support"
        obs, exp = obs[:-1], exp[:-1]
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def _next_probs(lm, ids, temperature=1.0, top_k=None, top_p=None):
    logits = lm.logits(ids[None])[0, -1]
    return np.asarray(
        jax.nn.softmax(lm_inference.sampling.filter_logits(logits, temperature, top_k, top_p)),
        np.float64,
    )


def test_first_token_frequencies_match_softmax(lm):
    n = 40_000
    s = lm_inference.sample(jax.random.key(0), lm, PROMPT, n, max_new_tokens=1, eos_token_id=-1)
    counts = np.bincount(np.asarray(s.tokens[:, 0]), minlength=V)
    assert _chi2_pvalue(counts, _next_probs(lm, PROMPT)) > 1e-4


def test_two_token_joint_frequencies_through_the_cache(lm):
    """Pairs (s1, s2) test decode_step: p(s1, s2) = p(s1 | prompt) p(s2 | prompt, s1)."""
    n = 100_000
    s = lm_inference.sample(jax.random.key(1), lm, PROMPT, n, max_new_tokens=2, eos_token_id=-1)
    tok = np.asarray(s.tokens)
    counts = np.bincount(tok[:, 0] * V + tok[:, 1], minlength=V * V)
    p1 = _next_probs(lm, PROMPT)
    ext = np.concatenate([np.repeat(PROMPT[None], V, 0), np.arange(V)[:, None]], 1)
    p2 = np.asarray(jax.nn.softmax(lm.logits(ext)[:, -1]), np.float64)
    joint = (p1[:, None] * p2).ravel()
    assert _chi2_pvalue(counts, joint / joint.sum()) > 1e-4
    # the returned log-probabilities are the model's
    np.testing.assert_allclose(
        np.asarray(s.log_probs[:50]).sum(1), np.log(joint[tok[:50, 0] * V + tok[:50, 1]]), atol=1e-4
    )


@pytest.mark.parametrize(
    "kw", [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.6), dict(temperature=1.5, top_k=10)]
)
def test_temperature_top_k_top_p(lm, kw):
    n = 30_000
    s = lm_inference.sample(
        jax.random.key(2), lm, PROMPT, n, max_new_tokens=1, eos_token_id=-1, **kw
    )
    counts = np.bincount(np.asarray(s.tokens[:, 0]), minlength=V)
    probs = _next_probs(lm, PROMPT, **kw)
    assert np.all(counts[probs == 0] == 0), "a filtered token was sampled"
    if "top_k" in kw:
        assert (probs > 0).sum() == kw["top_k"]
    if "top_p" in kw:  # the smallest set of most likely tokens whose mass reaches top_p
        p = np.sort(_next_probs(lm, PROMPT))[::-1]
        assert (probs > 0).sum() == np.searchsorted(np.cumsum(p), kw["top_p"]) + 1
    assert _chi2_pvalue(counts, probs) > 1e-4


def test_eos_pads_and_sequence_logprob_is_exact(lm):
    s = lm_inference.sample(jax.random.key(3), lm, PROMPT, 256, max_new_tokens=6, eos_token_id=1)
    tok, lp = np.asarray(s.tokens), np.asarray(s.log_probs)
    ended = (tok == 1).any(1)
    assert ended.any() and (~ended).any()  # both cases are exercised with this seed
    for row, lrow in zip(tok[ended], lp[ended], strict=True):
        first = list(row).index(1)
        assert np.all(row[first:] == 1) and np.all(lrow[first + 1 :] == 0)
    exact = np.asarray(lm_inference.sequence_logprob(lm, PROMPT, tok, eos_token_id=1))
    np.testing.assert_allclose(exact, lp.sum(1), atol=1e-4)
    # without EOS handling every position is scored: an explicit product of softmaxes
    row = tok[0]
    full = np.concatenate([PROMPT, row])
    logp = np.asarray(jax.nn.log_softmax(lm.logits(full[None])[0], -1))
    manual = sum(logp[len(PROMPT) - 1 + t, row[t]] for t in range(len(row)))
    got = float(lm_inference.sequence_logprob(lm, PROMPT, row, eos_token_id=-1))
    assert abs(got - manual) < 1e-4


def test_batch_of_left_padded_prompts(lm):
    ids = np.array([[0, 0, 7, 8], [3, 4, 5, 6]], np.int32)
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]], np.int32)
    s = lm_inference.sample(jax.random.key(4), lm, ids, 3, max_new_tokens=5, attention_mask=mask)
    assert s.tokens.shape == (2, 3, 5)
    # a padded prompt's first-token distribution is the unpadded prompt's
    out, _ = lm.prefill(lm.params, jnp.asarray(ids), jnp.asarray(mask), 9)
    ref, _ = lm.prefill(lm.params, jnp.asarray(ids[:1, 2:]), jnp.ones((1, 2), jnp.int32), 9)
    np.testing.assert_allclose(np.asarray(out.logits[0]), np.asarray(ref.logits[0]), atol=1e-5)
    with pytest.raises(ValueError, match="left-padded"):
        lm_inference.sample(jax.random.key(4), lm, ids, 1, attention_mask=mask[:, ::-1])


def test_bad_arguments(lm):
    for kw, msg in [
        (dict(num_samples=0), "num_samples"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=1.5), "top_p"),
    ]:
        with pytest.raises(ValueError, match=msg):
            lm_inference.sample(jax.random.key(0), lm, PROMPT, **kw)


@pytest.mark.parametrize("v", [3, 256, 700])
def test_categorical_exact_frequencies_and_never_zero_probability(v):
    """Two-level inverse CDF: frequencies match softmax (vocabularies below, at and across the
    256-token block size), and -inf tokens are never drawn."""
    from lm_inference.sampling import categorical

    rng = np.random.RandomState(v)
    logits = 3.0 * rng.randn(v)
    logits[rng.rand(v) < 0.3] = -np.inf  # a third of the vocabulary is impossible
    logits[0] = 1.0
    n = 200_000
    draws = np.asarray(
        categorical(jax.random.key(v), jnp.broadcast_to(jnp.asarray(logits), (n, v)))
    )
    counts = np.bincount(draws, minlength=v)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)), np.float64)
    assert np.all(counts[np.isneginf(logits)] == 0)
    assert _chi2_pvalue(counts, probs) > 1e-4
    # extreme ranges: one token carries all the mass up to float32 precision
    spike = jnp.full((4, v), -1e30).at[:, v - 1].set(0.0)
    assert np.all(np.asarray(categorical(jax.random.key(0), spike)) == v - 1)
