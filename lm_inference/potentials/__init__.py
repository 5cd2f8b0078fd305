r"""Potentials for :class:`lm_inference.Target`: ``sigma(s) ∝ p0(s | prompt) phi(s)``.

A :class:`Potential` carries a state per particle through the SMC sweep and gives per-token log
weights (a ``[V]`` vector of every next token's weight, e.g. a mask, and/or an increment once the
token is drawn) and a value at completion (:mod:`lm_inference.potentials.base` states the
contract). A plain JAX function ``tokens [T] -> log phi`` is the stateless special case.

Built-ins:

- terminal: :func:`indicator`, :func:`threshold`, :func:`contains_token`, :func:`ends_with`;
- constraints compiled to device tables: :func:`regex`, :func:`json_schema` (outlines-core
  automata), :func:`short_words` (every word at most ``k`` letters);
- language models: :func:`prompted` (prompt intersection, products and powers of models),
  :func:`infilling`;
- host Python: :func:`host` (terminal), :func:`host_prefix` (genlm-control's prefix / complete,
  one batched callback per step);
- composition: :func:`product`, :func:`tempered`, :func:`at_boundaries` (multi-token units).

Any potential can also be passed as ``twist=`` to :func:`lm_inference.smc` (a critic).
"""

import importlib

_NAMES = {
    "Potential": "base",
    "PotentialError": "base",
    "as_potential": "base",
    "product": "base",
    "tempered": "base",
    "log_value": "base",
    "indicator": "terminal",
    "threshold": "terminal",
    "contains_token": "terminal",
    "ends_with": "terminal",
    "prompted": "lm",
    "infilling": "lm",
    "infilling_joint_samples": "lm",
    "host": "callbacks",
    "host_prefix": "callbacks",
    "regex": "automata",
    "json_schema": "automata",
    "TokenDFA": "automata",
    "compile_regex": "automata",
    "token_bytes": "automata",
    "short_words": "words",
    "llamppl_short_words": "words",
    "at_boundaries": "units",
}

_BUILTIN = {
    "contains_token": "terminal",
    "ends_with": "terminal",
}


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"lm_inference.potentials.{_NAMES[name]}"), name)
    if name == "BUILTIN":
        return {k: getattr(importlib.import_module(f"lm_inference.potentials.{m}"), k)
                for k, m in _BUILTIN.items()}
    raise AttributeError(f"module 'lm_inference.potentials' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_NAMES))


__all__ = list(_NAMES)
