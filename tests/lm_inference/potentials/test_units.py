"""Multi-token units: weights deferred to boundaries keep phi and the estimator unbiased."""

import numpy as np

from lm_inference import exact, potentials
from lm_inference.potentials.units import boundary_tokens
from lm_inference.target import Target
from tests.lm_inference._text import text_lm
from tests.lm_inference.potentials._common import z_unbiased


def test_boundaries_keep_phi_and_unbiased():
    lm = text_lm(0)
    base = potentials.short_words(lm, 2, mask=False)
    ref = exact.enumerate_target(Target(lm, [0], 4, base))
    words = boundary_tokens(lm)
    assert words.tolist() == [False, False, False, True, False, False, False]
    for unit, every in ((2, 2), (words, None), (3, 3)):
        target = Target(lm, [0], 4, potentials.at_boundaries(base, unit))
        en = exact.enumerate_target(target)
        np.testing.assert_allclose(en.log_phi, ref.log_phi)
        z = z_unbiased(target, 4, 2000, 7, float(en.log_Z), resample_every=every, ess_threshold=1.0)
        assert abs(z) < 4  # z-score
