r"""The target of twisted SMC over a language model's tokens.

$$\sigma(s_{1:T}) = \frac{p_0(s_{1:T} \mid \text{prompt})\, \phi(s_{1:T})}{Z}, \qquad
Z = \sum_{s_{1:T}} p_0(s_{1:T} \mid \text{prompt})\, \phi(s_{1:T}).$$

End of sequence: when the model has an ``eos_token_id``, a sequence that emits it at step ``t``
is complete; the positions after it hold ``eos_token_id`` as padding and contribute nothing to
``p_0`` (probability one). A sequence is complete at its first EOS or after ``T`` tokens; the
potential's completion value sees the whole ``[T]`` array (padding included).

``forced_eos=True`` gives genlm-control's semantics: every sequence ends with EOS, and one that has
none after ``T`` tokens is completed by a forced EOS, which contributes ``log p0(EOS | s)``:
``sigma(s) ∝ p0(s EOS | prompt) phi(s)``.
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from kernels.types import Array
from lm_inference.base import LanguageModel
from lm_inference.potentials.base import Potential, as_potential, log_value

__all__ = ["Target"]


@dataclass(eq=False)
class Target:
    """``sigma(s) ∝ p0(s | prompt) phi(s)`` over ``num_tokens`` new tokens.

    Args:
        lm: a model implementing :class:`lm_inference.base.LanguageModel`.
        prompt: text (needs ``lm.tokenizer``) or a 1-D sequence of token ids (non-empty).
        num_tokens: ``T``, the number of new tokens.
        log_potential: a :class:`lm_inference.potentials.Potential` (stateful: per-token
            weights, masks, completion value), or a JAX function ``tokens [T] -> log phi``
            (scalar, ``-inf`` allowed; evaluated at completion). ``None`` means ``phi = 1``.
            A function with ``uses_lm_params = True`` is called as ``fn(tokens, params)`` with
            the LM's parameters.
        eos_token_id: overrides ``lm.eos_token_id``; pass ``-1`` to disable EOS handling.
        forced_eos: complete every sequence with EOS (module docstring).

    Attributes:
        prompt_ids: ``[P]`` int32 prompt token ids.
        potential: the :class:`~lm_inference.potentials.Potential` (``None``: ``phi = 1``).
    """

    lm: LanguageModel
    prompt: str | Array
    num_tokens: int
    log_potential: Callable | None = None
    eos_token_id: int | None = None
    forced_eos: bool = False

    def __post_init__(self):
        if isinstance(self.prompt, str):
            if getattr(self.lm, "tokenizer", None) is None:
                raise ValueError(
                    "Target: a text prompt needs a tokenizer, but this model has none; "
                    "pass the prompt as token ids instead."
                )
            ids = self.lm.tokenizer(self.prompt)["input_ids"]
            if len(ids) == 0 and getattr(self.lm.tokenizer, "bos_token_id", None) is not None:
                ids = [self.lm.tokenizer.bos_token_id]
        else:
            ids = np.asarray(self.prompt)
            if ids.ndim != 1:
                raise ValueError(
                    f"Target: prompt token ids must be 1-D [P], got shape {ids.shape}; "
                    "pass one prompt (particles share it)."
                )
            if not np.issubdtype(ids.dtype, np.integer) and ids.size:
                raise ValueError(f"Target: prompt token ids must be integers, got {ids.dtype}.")
        ids = np.asarray(ids, np.int32)
        if ids.size == 0:
            raise ValueError("Target: the prompt is empty; give at least one token (e.g. BOS).")
        if ids.min() < 0 or ids.max() >= self.lm.vocab_size:
            raise ValueError(
                f"Target: prompt token ids must be in [0, {self.lm.vocab_size}), "
                f"got range [{ids.min()}, {ids.max()}]."
            )
        if not isinstance(self.num_tokens, int | np.integer) or self.num_tokens < 1:
            raise ValueError(f"Target: num_tokens must be a positive int, got {self.num_tokens!r}.")
        max_pos = getattr(self.lm, "max_positions", None)
        if max_pos is not None and ids.size + self.num_tokens > max_pos:
            raise ValueError(
                f"Target: prompt ({ids.size} tokens) + num_tokens ({self.num_tokens}) exceeds the "
                f"model's maximum positions ({max_pos}); shorten the prompt or num_tokens."
            )
        if self.log_potential is not None and not (
            callable(self.log_potential) or isinstance(self.log_potential, Potential)
        ):
            raise TypeError(
                "Target: log_potential must be a lm_inference.potentials.Potential or a callable "
                f"tokens [T] -> scalar log phi, got {type(self.log_potential).__name__}."
            )
        self.potential = as_potential(self.log_potential, self.lm)
        self.prompt_ids = jnp.asarray(ids)
        if self.eos_token_id is None:
            self.eos_token_id = getattr(self.lm, "eos_token_id", None)
        if self.eos_token_id is not None and self.eos_token_id < 0:
            self.eos_token_id = None
        if self.eos_token_id is not None and not 0 <= self.eos_token_id < self.lm.vocab_size:
            raise ValueError(
                f"Target: eos_token_id {self.eos_token_id} is outside the vocabulary "
                f"[0, {self.lm.vocab_size}); pass -1 to disable EOS handling."
            )
        if self.forced_eos and self.eos_token_id is None:
            raise ValueError("Target: forced_eos=True needs an EOS token (eos_token_id).")
        if self.forced_eos and max_pos is not None and ids.size + self.num_tokens + 1 > max_pos:
            raise ValueError(
                f"Target: forced_eos needs prompt + num_tokens + 1 <= {max_pos} positions."
            )

    @property
    def eos(self) -> int:
        """The EOS id, or ``-1`` when EOS handling is off (never matches a token)."""
        return -1 if self.eos_token_id is None else int(self.eos_token_id)

    def log_phi(self, tokens: Array) -> Array:
        """``log phi`` of one ``[T]`` token array (0 without a potential; without the forced
        EOS's ``log p0(EOS | s)``)."""
        if self.potential is None:
            return jnp.zeros((), jnp.float32)
        return log_value(self.potential, self.pad_after_eos(tokens), self.prompt_ids, self.eos)

    def check_tokens(self, tokens, what: str, batch: bool = True) -> Array:
        """``tokens`` as int32 ``[M, T]`` (or ``[T]`` with ``batch=False``), EOS-padded, after
        checking the shape and that every id is in the vocabulary."""
        if isinstance(tokens, jax.core.Tracer):  # traced (vmap / jit): shape checks only
            if tokens.shape[-1:] != (self.num_tokens,) or tokens.ndim != (2 if batch else 1):
                raise ValueError(f"{what} must have T = {self.num_tokens} columns, got {tokens.shape}.")
            return self.pad_after_eos(tokens.astype(jnp.int32))
        arr = np.asarray(tokens)
        want = (self.num_tokens,) if not batch else (None, self.num_tokens)
        if arr.ndim != len(want) or arr.shape[-1] != self.num_tokens:
            shape = "[T]" if not batch else "[M, T]"
            raise ValueError(
                f"{what} must have shape {shape} with T = {self.num_tokens}, got {arr.shape}."
            )
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{what} must be integer token ids, got {arr.dtype}.")
        if arr.size and (arr.min() < 0 or arr.max() >= self.lm.vocab_size):
            raise ValueError(
                f"{what} has token ids outside the vocabulary [0, {self.lm.vocab_size}) "
                f"(range [{arr.min()}, {arr.max()}])."
            )
        return self.pad_after_eos(jnp.asarray(arr, jnp.int32))

    def pad_after_eos(self, tokens: Array) -> Array:
        """Replace every token after the first EOS by EOS (``[..., T]``)."""
        if self.eos_token_id is None:
            return tokens
        is_eos = tokens == self.eos
        after = jnp.cumsum(is_eos, axis=-1) - is_eos > 0
        return jnp.where(after, self.eos, tokens)

    def decode(self, tokens: Array) -> list[str]:
        """Decode ``[N, T]`` tokens to text (stops at EOS) with the model's tokenizer."""
        tok = self.lm.tokenizer
        if tok is None:
            raise ValueError("Target.decode: the model has no tokenizer.")
        out = []
        for row in np.asarray(tokens):
            row = list(row)
            if self.eos_token_id is not None and self.eos in row:
                row = row[: row.index(self.eos)]
            out.append(tok.decode(row))
        return out
