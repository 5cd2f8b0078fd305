"""Shared tiny targets for the twisted-SMC tests (exactly enumerable)."""

import functools

import jax
import jax.numpy as jnp

from lm_inference import exact
from lm_inference.tabular import TabularLM
from lm_inference.target import Target


def soft_potential(s):
    """``log phi = -#(tokens != 2) - 2 * 1[s_1 != 1]`` (``phi <= 1``)."""
    return -1.0 * jnp.sum(s != 2) + jnp.where(s[0] == 1, 0.0, -2.0)


@functools.cache
def tiny(eos: bool = True, T: int = 3):
    """``(target, enumeration)`` with V = 4 (token 3 is EOS when ``eos``)."""
    lm = TabularLM(jax.random.key(0), vocab_size=4, eos_token_id=3 if eos else None)
    target = Target(lm, [0, 1], T, soft_potential)
    return target, exact.enumerate_target(target)
