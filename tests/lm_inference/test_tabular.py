import jax
import jax.numpy as jnp
import numpy as np

from lm_inference import exact
from lm_inference.base import broadcast_cache, reorder_cache
from lm_inference.tabular import TabularLM
from tests.lm_inference._tiny import tiny


def test_decode_matches_full_sequence_logits():
    lm = TabularLM(jax.random.key(3), vocab_size=5)
    ids = jax.random.randint(jax.random.key(4), (3, 6), 0, 5)
    full = lm.logits(ids)
    out, cache = lm.prefill(lm.params, ids[:, :2], jnp.ones((3, 2), jnp.int32), 6)
    np.testing.assert_allclose(out.logits, full[:, 1])
    for t in range(2, 6):
        out, cache = lm.decode_step(lm.params, ids[:, t], cache)
        np.testing.assert_allclose(out.logits, full[:, t])


def test_cache_gather_equals_permuted_decoding():
    lm = TabularLM(jax.random.key(3), vocab_size=5)
    ids = jax.random.randint(jax.random.key(5), (4, 3), 0, 5)
    _, cache = lm.prefill(lm.params, ids[:1, :1], jnp.ones((1, 1), jnp.int32), 3)
    cache = broadcast_cache(cache, 4)
    _, cache = lm.decode_step(lm.params, ids[:, 1], cache)
    perm = jnp.array([2, 0, 3, 1])
    a, _ = lm.decode_step(lm.params, ids[perm, 2], reorder_cache(cache, perm))
    b, _ = lm.decode_step(lm.params, ids[:, 2], cache)
    np.testing.assert_allclose(a.logits, b.logits[perm])
    full = lm.logits(ids[perm])
    np.testing.assert_allclose(a.logits, full[:, 2])


def test_enumeration_normalizes_with_eos():
    for eos in (True, False):
        target, en = tiny(eos)
        # p0 sums to one over EOS-padded sequences; sigma sums to one
        np.testing.assert_allclose(jax.nn.logsumexp(en.log_p0), 0.0, atol=1e-5)
        np.testing.assert_allclose(jax.nn.logsumexp(en.log_sigma), 0.0, atol=1e-5)
    target, en = tiny(True)
    assert en.sequences.shape[0] == 1 + 3 + 9 + 27  # EOS-padded sequences of length 3
    # after the first EOS everything is EOS
    s = np.asarray(en.sequences)
    first = np.argmax(s == 3, axis=1)
    for row, f in zip(s, first, strict=True):
        if 3 in row:
            assert np.all(row[f:] == 3)


def test_optimal_twist_last_step_is_phi():
    target, en = tiny(True)
    tw = exact.optimal_twist(target, en)
    tf_logq = exact.teacher_force(target, en.sequences, tw).log_q.sum(1)
    # the optimal proposal is sigma itself
    np.testing.assert_allclose(tf_logq, en.log_sigma, atol=1e-4)
