"""Generic SMC core in pure JAX: one SMC step (``init`` / ``step``, :mod:`kernels.smc.base`), the
sequential driver, tempering, twisted and conditional SMC, estimators of bidirectional log Z
bounds, annealing paths, and sharding."""

import importlib

_SUBMODULES = (
    "base",
    "resampling",
    "sequential",
    "tempering",
    "annealing",
    "twisted",
    "potential",
    "estimators",
    "sharding",
)


# public names re-exported lazily from their modules
_NAMES = {
    "SMCState": "base",
    "SMCInfo": "base",
    "init": "base",
    "step": "base",
    "vmap_move": "base",
    "SMCResult": "sequential",
    "run": "sequential",
    "gather": "sequential",
    "broadcast": "sequential",
    "clamp_first": "sequential",
    "normalize": "resampling",
    "ess": "resampling",
    "log_ess": "resampling",
    "multinomial": "resampling",
    "systematic": "resampling",
    "stratified": "resampling",
    "residual": "resampling",
    "conditional": "resampling",
    "conditional_multinomial": "resampling",
    "conditional_systematic": "resampling",
    "conditional_stratified": "resampling",
    "conditional_residual": "resampling",
    "resample_if": "resampling",
    "for_blackjax": "resampling",
    "ProbabilityWeightsError": "resampling",
    "log_mean_exp": "estimators",
    "kl_intervals": "estimators",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"kernels.smc.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"kernels.smc.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'kernels.smc' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + list(_NAMES))
