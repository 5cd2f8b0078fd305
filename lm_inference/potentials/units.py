r"""Multi-token units: a potential's weights released only at unit boundaries.

``at_boundaries(potential, boundary)`` keeps the same ``phi`` but changes the intermediate targets:
the potential's per-token weights (its ``logw_next`` of the drawn token and its ``update``
increments) accumulate in the state and are applied when a unit ends (a boundary token, e.g. a
space or newline: word or line units; or every ``k`` tokens: fixed-length units) and at
completion. Proposals then ignore the potential inside a unit (it is checked, not used to mask),
as in genlm-control's multi-token unit samplers and step-level particle filtering with a reward
model scoring each finished step. Combine with ``smc(..., resample_every=...)`` to resample only at
boundaries.
"""

import jax.numpy as jnp
import numpy as np

from lm_inference.potentials.base import Potential, as_potential

__all__ = ["at_boundaries", "boundary_tokens"]


def boundary_tokens(lm, chars: str = " \n") -> np.ndarray:
    """``[V]`` bool: tokens whose text ends with one of ``chars`` (word / line units)."""
    from lm_inference.potentials.automata import token_bytes

    tb = token_bytes(lm.tokenizer, lm.vocab_size)
    ends = tuple(c.encode() for c in chars)
    return np.array([b is not None and b.endswith(ends) for b in tb])


def at_boundaries(potential, boundary: np.ndarray | int) -> Potential:
    """Defer ``potential``'s weights to unit boundaries (module docstring).

    Args:
        potential: any potential.
        boundary: ``[V]`` bool array of boundary tokens (e.g. :func:`boundary_tokens`), or an int
            ``k`` for units of ``k`` tokens.
    """
    pot = as_potential(potential)
    fixed = isinstance(boundary, int | np.integer)
    if fixed and int(boundary) < 1:
        raise ValueError(f"at_boundaries: unit length must be >= 1, got {boundary}.")
    mask = None if fixed else jnp.asarray(np.asarray(boundary, bool))

    def init(params, prompt, num_tokens):
        return pot.init(params, prompt, num_tokens), jnp.zeros((), jnp.float32)

    def update(params, state, tokens, t):
        x, pending = state
        inc = jnp.zeros(tokens.shape[0], jnp.float32)
        lw = pot.logw_next_batch(params, x, t)
        if lw is not None:
            inc = inc + jnp.take_along_axis(lw, tokens[:, None], 1)[:, 0]
        x, u = pot.update_batch(params, x, tokens, t)
        if u is not None:
            inc = inc + u
        pending = pending + inc
        at = (jnp.full(tokens.shape, (t + 1) % int(boundary) == 0) if fixed else mask[tokens])
        return (x, jnp.where(at, 0.0, pending)), jnp.where(at, pending, 0.0)

    def complete(params, state, tokens):
        x, pending = state
        c = pot.complete_batch(params, x, tokens)
        return pending if c is None else pending + c

    return Potential(init=init, update=update, complete=complete, params=pot.params,
                     batched=True, name=f"at_boundaries({pot.name})", info=pot.info)
