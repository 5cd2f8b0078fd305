"""NumPyro integration: our kernels as ``numpyro.infer.MCMCKernel`` objects, SMC for NumPyro
models, and bidirectional (BDMC) bounds on the log marginal likelihood.

Public names are imported on first use, so ``import ppl`` stays cheap.
"""

import importlib

# public name -> module that defines it
_EXPORTS = {
    "BlackJAXKernel": "ppl.adapter",
    "InvolutiveMCMC": "ppl.involutive",
    "OrbitalMCMC": "ppl.orbital",
    "DeterministicGibbs": "ppl.deterministic_gibbs",
    "TemperedSMC": "ppl.smc",
    "ParticleFilter": "ppl.state_space",
    "bdmc": "ppl.bdmc",
    "BDMCResult": "ppl.bdmc",
    "ImplicitMH": "ppl.implicit_mh",
    "mutual_information": "ppl.information",
    "MIResult": "ppl.information",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        # (importing ppl.bdmc sets the submodule as ppl.bdmc: that module is callable)
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ppl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
