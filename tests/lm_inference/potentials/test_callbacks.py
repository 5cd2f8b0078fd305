"""Host potentials: one batched callback per step, same log Z_hat as the on-device equivalent
with shared keys, and clear errors for bad values."""

import jax
import numpy as np
import pytest

from lm_inference import potentials
from lm_inference.potentials import PotentialError
from lm_inference.potentials.words import max_word_length
from lm_inference.target import Target
from lm_inference.twisted_smc import smc
from tests.lm_inference._text import EOS, text_lm


def _host_short(k, calls=None):
    def prefix(xs):
        if calls is not None:
            calls.append(len(xs))
        return [0.0 if max_word_length(x) <= k else -np.inf for x in xs]

    return potentials.host_prefix(prefix, decode=text_lm().tokenizer.decode, eos=EOS)


def test_host_prefix_equals_on_device_with_shared_keys():
    lm = text_lm(0)
    calls = []
    host, dev = Target(lm, [0], 4, _host_short(2, calls)), Target(
        lm, [0], 4, potentials.short_words(lm, 2, mask=False)
    )
    for seed in range(4):
        a, b = smc(jax.random.key(seed), host, 16), smc(jax.random.key(seed), dev, 16)
        np.testing.assert_allclose(a.log_Z, b.log_Z, atol=1e-6)
        np.testing.assert_array_equal(a.samples, b.samples)
    assert set(calls) == {16}  # one batched call per step with every particle


def _target(fn, batched=True):
    lm = text_lm(0)
    pot = potentials.host_prefix(fn) if batched else potentials.host(fn)
    return Target(lm, [0], 3, pot)


@pytest.mark.parametrize(
    "fn,match",
    [
        (lambda xs: None, "returned None"),
        (lambda xs: [True] * len(xs), "bool"),
        (lambda xs: 1 / 0, "raised ZeroDivisionError"),
        (lambda xs: [np.nan] * len(xs), "NaN"),
        (lambda xs: [np.inf] * len(xs), r"\+inf"),
        (lambda xs: [0.0] * (len(xs) + 1), "shape"),
    ],
)
def test_host_prefix_bad_values_raise_clear_errors(fn, match):
    with pytest.raises(PotentialError, match=match):
        smc(jax.random.key(0), _target(fn), 4)


@pytest.mark.parametrize(
    "fn,match",
    [(lambda s: None, "returned None"), (lambda s: 1 / 0, "ZeroDivisionError"),
     (lambda s: float("nan"), "NaN")],
)
def test_terminal_host_bad_values(fn, match):
    with pytest.raises(PotentialError, match=match):
        smc(jax.random.key(0), _target(fn, batched=False), 4)
