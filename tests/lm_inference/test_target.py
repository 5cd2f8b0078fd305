import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_inference.tabular import TabularLM
from lm_inference.target import Target


@pytest.fixture(scope="module")
def lm():
    return TabularLM(jax.random.key(0), vocab_size=4, eos_token_id=3, max_positions=8)


def test_errors(lm):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        Target(lm, "hello", 2)
    with pytest.raises(ValueError, match="1-D"):
        Target(lm, [[0, 1]], 2)
    with pytest.raises(ValueError, match="empty"):
        Target(lm, [], 2)
    with pytest.raises(ValueError, match="in \\[0, 4\\)"):
        Target(lm, [7], 2)
    with pytest.raises(ValueError, match="positive int"):
        Target(lm, [0], 0)
    with pytest.raises(ValueError, match="maximum positions"):
        Target(lm, [0, 1, 2], 6)
    with pytest.raises(TypeError, match="callable"):
        Target(lm, [0], 2, log_potential=3.0)


def test_eos_padding_and_potential(lm):
    t = Target(lm, np.array([0, 1]), 4, lambda s: -jnp.sum(s))
    assert t.eos == 3
    np.testing.assert_array_equal(t.pad_after_eos(jnp.array([1, 3, 0, 2])), [1, 3, 3, 3])
    assert float(t.log_phi(jnp.array([1, 2, 0, 0]))) == -3.0
    assert Target(lm, [0], 2, eos_token_id=-1).eos_token_id is None
    assert float(Target(lm, [0], 2).log_phi(jnp.zeros(2, jnp.int32))) == 0.0
