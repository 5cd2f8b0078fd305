"""Generic SMC core in pure JAX: resampling, the sequential driver, tempering, twisted and
conditional SMC, estimators of bidirectional log Z bounds, annealing paths, and sharding."""

import importlib

_SUBMODULES = (
    "resampling",
    "sequential",
    "tempering",
    "annealing",
    "twisted",
    "estimators",
    "sharding",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"kernels.smc.{name}")
    raise AttributeError(f"module 'kernels.smc' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
