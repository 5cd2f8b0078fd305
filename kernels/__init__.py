"""Pure-JAX inference primitives (no NumPyro import).

Submodules, one concept each: ``involutive``, ``orbital``, ``flows``, ``implicit_mh``,
``composition`` (cycles of kernels over blocks of the position), ``smc``.
Every MCMC kernel follows BlackJAX's contract: ``init(position, logdensity_fn) -> state`` with
``state.position``, and ``step(key, state, ...) -> (state, info)``.
"""

import importlib

_SUBMODULES = ("involutive", "orbital", "flows", "implicit_mh", "composition", "smc", "types")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"kernels.{name}")
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
