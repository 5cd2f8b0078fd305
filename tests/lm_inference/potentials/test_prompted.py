"""Another LM as a potential: prompt intersection, products of models, powers, against
enumeration of ``p(s | a) p(s | b)``."""

import jax
import numpy as np

from lm_inference import exact, potentials
from lm_inference.target import Target
from lm_inference.twisted_smc import teacher_force
from tests.lm_inference._text import text_lm
from tests.lm_inference.potentials._common import exact_identity, z_unbiased


def _log_p(lm, prompt, seqs):
    return np.asarray(teacher_force(Target(lm, prompt, seqs.shape[1]), seqs).log_p0.sum(1))


def test_prompt_intersection_matches_enumeration_and_is_unbiased():
    lm = text_lm(0)
    target = Target(lm, [0], 3, potentials.prompted(lm, [1, 2]))
    en = exact.enumerate_target(target)
    la, lb = _log_p(lm, [0], en.sequences), _log_p(lm, [1, 2], en.sequences)
    np.testing.assert_allclose(en.log_phi, lb, atol=1e-5)
    np.testing.assert_allclose(float(en.log_Z), np.logaddexp.reduce(la + lb), atol=1e-5)
    assert abs(z_unbiased(target, 4, 2000, 0, float(en.log_Z))) < 4  # z-score


def test_product_of_models_and_power():
    lm, other = text_lm(0), text_lm(3)  # two models with the same tokenizer
    beta = 0.5
    pot = potentials.product(
        potentials.prompted(other, [2]), potentials.tempered(potentials.prompted(lm, [1]), beta)
    )
    target = Target(lm, [0], 3, pot)
    en = exact.enumerate_target(target)
    want = _log_p(other, [2], en.sequences) + beta * _log_p(lm, [1], en.sequences)
    np.testing.assert_allclose(en.log_phi, want, atol=1e-5)
    q, eqw, Z = exact_identity(target)
    np.testing.assert_allclose([q, eqw], [1.0, Z], rtol=1e-5)
    assert abs(z_unbiased(target, 4, 2000, 1, float(en.log_Z))) < 4  # z-score


def test_critic_prompted_weights_are_exact():
    """A prompted LM as critic (twist): E_q[p0 phi / q] = Z exactly, and samples follow q."""
    from lm_inference.twisted_smc import smc
    from tests.lm_inference.potentials._common import chi2_pvalue

    lm = text_lm(0)
    target = Target(lm, [0], 3, potentials.regex(lm, r"(a|b)+\.?"))
    crit = potentials.prompted(lm, [2])
    q, eqw, Z = exact_identity(target, twist=crit)
    np.testing.assert_allclose([q, eqw], [1.0, Z], rtol=1e-5)
    en = exact.enumerate_target(target)
    tf = teacher_force(target, en.sequences, twist=crit)
    r = smc(jax.random.key(2), target, 20000, twist=crit, ess_threshold=0.0)
    assert chi2_pvalue(r.samples, en.sequences, np.exp(np.asarray(tf.log_q.sum(1))), 7) > 1e-3
    assert abs(z_unbiased(target, 8, 1000, 3, float(en.log_Z), twist=crit)) < 4  # z-score
