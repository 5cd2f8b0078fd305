"""One vocabulary across kernels.smc and ppl: ``ess_threshold``; the former name
``resample_threshold`` keeps working with a DeprecationWarning."""

import numpyro
import numpyro.distributions as dist
import pytest

import ppl


def model():
    numpyro.sample("x", dist.Normal())


def _transition(carry, y):
    return carry, None


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: ppl.TemperedSMC(model, **kw),
        lambda **kw: ppl.ParticleFilter(_transition, 0.0, **kw),
    ],
    ids=["TemperedSMC", "ParticleFilter"],
)
def test_ess_threshold_and_deprecated_alias(make):
    assert make().ess_threshold == 0.5
    assert make(ess_threshold=0.25).ess_threshold == 0.25
    with pytest.warns(DeprecationWarning, match="use ess_threshold"):
        old = make(resample_threshold=0.75)
    assert old.ess_threshold == 0.75 and old.resample_threshold == 0.75
    with pytest.raises(TypeError, match="not both"):
        make(ess_threshold=0.5, resample_threshold=0.5)
