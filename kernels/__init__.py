"""Pure-JAX inference primitives (no NumPyro import).

Submodules, one concept each: ``involutive``, ``orbital``, ``flows``, ``implicit_mh``, ``smc``.
Every MCMC kernel follows BlackJAX's contract: ``init(position, logdensity_fn) -> state`` with
``state.position``, and ``step(key, state, ...) -> (state, info)``.
"""
