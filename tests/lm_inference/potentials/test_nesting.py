"""Property test over compositions of potentials: every nesting of product / tempered /
at_boundaries over the built-ins (mask, check, another LM, terminal, host) defines
``log phi = sum of its parts`` (against each part alone, by enumeration), its twisted proposal
integrates to one with ``E_q[p0 phi / q] = Z`` exactly, and SMC's ``Z_hat`` is unbiased
(z-test) -- also when the composition is used as a critic."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from lm_inference import exact, potentials
from lm_inference.potentials.words import max_word_length
from lm_inference.target import Target
from tests.lm_inference._text import EOS, text_lm
from tests.lm_inference.potentials._common import exact_identity, z_unbiased

T = 3
LM = text_lm(0)


def _soft(s):
    return -0.5 * jnp.sum(s == 1)


PARTS = {
    "regex": lambda: potentials.regex(LM, r"(a|b| a)+\.?"),
    "words": lambda: potentials.short_words(LM, 2),
    "check": lambda: potentials.short_words(LM, 2, mask=False),
    "lm": lambda: potentials.prompted(LM, [1, 2]),
    "soft": lambda: _soft,
    "host": lambda: potentials.host_prefix(
        lambda xs: [0.0 if max_word_length(x) <= 2 else -np.inf for x in xs],
        decode=LM.tokenizer.decode, eos=EOS,
    ),
}
WRAPS = {
    "id": lambda p: p,
    "pow": lambda p: potentials.tempered(p, 0.5),
    "unit": lambda p: potentials.at_boundaries(p, 2),
}


def _alone(name):
    return np.asarray(exact.enumerate_target(Target(LM, [0], T, PARTS[name]())).log_phi, np.float64)


ALONE = {}


def _scaled(name, wrap):
    if name not in ALONE:
        ALONE[name] = _alone(name)
    x = ALONE[name]
    return np.where(x == -np.inf, -np.inf, 0.5 * x) if wrap == "pow" else x


# depth 2: every pair of parts, each under every wrapper, and wrappers around the product
CASES = [
    (a, wa, b, wb, outer)
    for a, b in itertools.combinations(PARTS, 2)
    for wa, wb, outer in (("id", "id", "id"), ("pow", "unit", "id"), ("unit", "pow", "pow"),
                          ("id", "id", "unit"))
]


def _build(a, wa, b, wb, outer):
    inner = potentials.product(WRAPS[wa](PARTS[a]()), WRAPS[wb](PARTS[b]()))
    return WRAPS[outer](inner)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_composition_is_sum_of_parts_and_exact(case):
    a, wa, b, wb, outer = case
    target = Target(LM, [0], T, _build(*case))
    en = exact.enumerate_target(target)
    want = _scaled(a, wa) + _scaled(b, wb)
    if outer == "pow":
        want = np.where(want == -np.inf, -np.inf, 0.5 * want)
    np.testing.assert_allclose(np.asarray(en.log_phi, np.float64), want, atol=1e-5)
    q, eqw, Z = exact_identity(target)
    np.testing.assert_allclose([q, eqw], [1.0, Z], rtol=2e-5)


@pytest.mark.parametrize(
    "case",
    [c if i % 15 == 0 else pytest.param(c, marks=pytest.mark.slow) for i, c in
     enumerate(CASES) if i % 5 == 0],
    ids=lambda c: "-".join(c),
)
def test_composition_smc_unbiased(case):
    target = Target(LM, [0], T, _build(*case))
    log_Z = float(exact.enumerate_target(target).log_Z)
    assert abs(z_unbiased(target, 4, 800, hash(case) % 1000, log_Z)) < 4  # z-score


@pytest.mark.parametrize("critic", ["lm", "soft", "pow-lm"])
def test_compositions_as_critic_exact(critic):
    target = Target(LM, [0], T, _build("regex", "id", "check", "unit", "id"))
    twist = {"lm": PARTS["lm"](), "soft": potentials.as_potential(_soft),
             "pow-lm": potentials.tempered(PARTS["lm"](), 0.5)}[critic]
    q, eqw, Z = exact_identity(target, twist=twist)
    np.testing.assert_allclose([q, eqw], [1.0, Z], rtol=2e-5)
    log_Z = float(np.log(Z))
    assert abs(z_unbiased(target, 4, 800, 11, log_Z, twist=twist)) < 4  # z-score
