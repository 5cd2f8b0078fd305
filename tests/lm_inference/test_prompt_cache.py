"""The prompt's KV cache stored once (``CausalLM.share_prompt``, :meth:`CausalLM.broadcast_state`).

Ground truth is the same sweep with the prompt copied into every particle's cache
(``share_prompt = False``, the layout of ``broadcast_cache``): attention over the pair (shared
prompt, generated slots) is the same softmax over the same scores, split into two products, so
samples and resampling decisions are identical and log weights agree to float32 rounding
(``1e-5`` absolute; observed ``<= 6e-6`` on values of order 10).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_inference import Target, smc, teacher_force
from tests.lm_inference.test_models_scan import CONFIGS, _lm

TOL = 1e-5
PROMPT = jnp.asarray([2, 3, 4, 5, 6, 7, 8], jnp.int32)  # 7 tokens: longer than the windows


def potential(s):
    return jnp.where(s[0] == 5, 0.0, -1.0) - 0.3 * jnp.sum(s == 7)


def _copied(lm):
    """The same model (same parameters) with the prompt copied per particle."""
    return lm.replace(share_prompt=False)


def _pair(name):
    lm = _lm(CONFIGS[name])
    return lm, _copied(lm)


def _compare(name, forced_eos=False):
    lm, full = _pair(name)
    runs = []
    for m in (lm, full):
        tg = Target(m, PROMPT, 6, potential, eos_token_id=1, forced_eos=forced_eos)
        # resample every step, so reordering runs on every step
        runs.append(smc(jax.random.key(0), tg, 8, ess_threshold=1.0))
    a, b = runs
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.resampled, b.resampled)
    assert bool(np.all(np.asarray(a.resampled)[:-1]))
    np.testing.assert_allclose(a.log_weights, b.log_weights, rtol=0, atol=TOL)
    assert abs(float(a.log_Z - b.log_Z)) <= TOL


# sliding windows, soft-capping and four norms (gemma2), the longrope length test (phi3); the
# rest (learned positions, Conv1D, no-rope layers, ...) in the slow set
FAST = ["gemma2", "phi3"]


@pytest.mark.parametrize("name", FAST)
def test_shared_prompt_equals_copied(name):
    _compare(name, forced_eos=name == "phi3")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(CONFIGS) - set(FAST)))
def test_shared_prompt_equals_copied_every_architecture(name):
    _compare(name)


def test_teacher_force_with_shared_prompt():
    """teacher_force (exact enumeration, twist training) runs the same init: same log probs."""
    lm, full = _pair("qwen3")
    seqs = jax.random.randint(jax.random.key(3), (5, 6), 2, 48)
    outs = [teacher_force(Target(m, PROMPT, 6, potential, eos_token_id=1), seqs) for m in (lm, full)]
    np.testing.assert_allclose(outs[0].log_p0, outs[1].log_p0, rtol=0, atol=TOL)
    np.testing.assert_allclose(outs[0].log_q, outs[1].log_q, rtol=0, atol=TOL)


def test_layout_and_memory():
    """One prompt copy for all rows; rows hold only the generated slots, and reordering moves
    only those; memory per particle counts the generated slots."""
    lm = _lm(CONFIGS["llama" if "llama" in CONFIGS else "mistral"])
    p, total, n = PROMPT.shape[0], PROMPT.shape[0] + 6, 4
    _, cache = lm.prefill(lm.params, PROMPT[None], jnp.ones((1, p), jnp.int32), total)
    state = lm.broadcast_state(cache, n, p)
    d = lm.dims
    assert state["prefix"]["k"].shape == (1, d.num_layers, d.num_kv_heads, p, d.head_dim)
    assert state["layers"]["k"].shape == (n, d.num_layers, d.num_kv_heads, 6, d.head_dim)
    assert state["valid"].shape == (n, 6) and not bool(state["valid"].any())
    np.testing.assert_array_equal(state["index"], 0)
    np.testing.assert_array_equal(state["position"], p)
    moved = lm.reorder_state(state, jnp.asarray([3, 3, 0, 1]))
    assert moved["prefix"] is state["prefix"]
    assert lm.cache_bytes_per_particle(total, p) == lm.cache_bytes_per_particle(6)
    assert lm.cache_bytes_shared(p) > 0
    full = _copied(lm)
    assert full.cache_bytes_per_particle(total, p) == full.cache_bytes_per_particle(total)
    assert full.cache_bytes_shared(p) == 0
    assert "prefix" not in full.broadcast_state(cache, n, p)
