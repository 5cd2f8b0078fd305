r"""The target of twisted SMC over a language model's tokens.

$$\sigma(s_{1:T}) = \frac{p_0(s_{1:T} \mid \text{prompt})\, \phi(s_{1:T})}{Z}, \qquad
Z = \sum_{s_{1:T}} p_0(s_{1:T} \mid \text{prompt})\, \phi(s_{1:T}).$$

End of sequence: when the model has an ``eos_token_id``, a sequence that emits it at step ``t``
is complete; the positions after it hold ``eos_token_id`` as padding and contribute nothing to
``p_0`` (probability one). The potential still sees the whole ``[T]`` array (padding included).
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from kernels.types import Array
from lm_inference.base import LanguageModel

__all__ = ["Target"]


@dataclass(eq=False)
class Target:
    """``sigma(s) ∝ p0(s | prompt) phi(s)`` over ``num_tokens`` new tokens.

    Args:
        lm: a model implementing :class:`lm_inference.base.LanguageModel`.
        prompt: text (needs ``lm.tokenizer``) or a 1-D sequence of token ids (non-empty).
        num_tokens: ``T``, the number of new tokens.
        log_potential: ``tokens [T] -> log phi`` (scalar, ``-inf`` allowed), a JAX function
            (the library vmaps and jits it with the sweep); see :mod:`lm_inference.potentials`.
            ``None`` means ``phi = 1``. A potential with ``uses_lm_params = True`` is called as
            ``log_potential(tokens, params)`` with the LM's parameters.
        eos_token_id: overrides ``lm.eos_token_id``; pass ``-1`` to disable EOS handling.

    Attributes:
        prompt_ids: ``[P]`` int32 prompt token ids.
    """

    lm: LanguageModel
    prompt: str | Array
    num_tokens: int
    log_potential: Callable | None = None
    eos_token_id: int | None = None

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
        if self.log_potential is not None and not callable(self.log_potential):
            raise TypeError("Target: log_potential must be callable tokens [T] -> scalar.")
        self.prompt_ids = jnp.asarray(ids)
        if self.eos_token_id is None:
            self.eos_token_id = getattr(self.lm, "eos_token_id", None)
        if self.eos_token_id is not None and self.eos_token_id < 0:
            self.eos_token_id = None

    @property
    def eos(self) -> int:
        """The EOS id, or ``-1`` when EOS handling is off (never matches a token)."""
        return -1 if self.eos_token_id is None else int(self.eos_token_id)

    def log_phi(self, tokens: Array, params=None) -> Array:
        """``log phi`` of one ``[T]`` token array (0 without a potential)."""
        if self.log_potential is None:
            return jnp.zeros((), jnp.float32)
        if getattr(self.log_potential, "uses_lm_params", False):
            params = self.lm.params if params is None else params
            return jnp.asarray(self.log_potential(tokens, params), jnp.float32)
        return jnp.asarray(self.log_potential(tokens), jnp.float32)

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
