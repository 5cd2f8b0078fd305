r"""LLaMPPL's "every word at most ``k`` letters" as an on-device mask.

A word is a maximal run of alphabetic characters (``str.isalpha``); the constraint is
``phi(s) = 1[every word of text(s) has at most k letters]``. From the vocabulary we precompute,
per token, whether it contains a non-letter (a word break), the letters before its first break
(``lead``), after its last break (``trail``), the longest run inside (``inner``), and its length
when it has no break. The state is the length ``L`` of the word being written; token ``v`` is
allowed iff ``L + len(v) <= k`` (no break) or ``L + lead(v) <= k`` and ``inner(v), trail(v) <= k``,
and the new state is ``L + len(v)`` or ``trail(v)``. Each token's characters are its bytes decoded
in isolation (UTF-8, invalid bytes as non-letters).
"""

import jax.numpy as jnp
import numpy as np

from lm_inference.potentials.automata import token_bytes
from lm_inference.potentials.base import Potential

__all__ = ["short_words", "word_stats", "max_word_length", "llamppl_short_words", "llamppl_allowed"]


def max_word_length(text: str) -> int:
    """The longest run of alphabetic characters in ``text`` (the host reference)."""
    best = run = 0
    for ch in text:
        run = run + 1 if ch.isalpha() else 0
        best = max(best, run)
    return best


def word_stats(tokens: list[bytes | None]) -> dict[str, np.ndarray]:
    """Per-token ``has_break``, ``length``, ``lead``, ``trail``, ``inner`` (module docstring);
    undefined tokens (``None``) count as a break with no letters."""
    V = len(tokens)
    out = {k: np.zeros(V, np.int32) for k in ("has_break", "length", "lead", "trail", "inner")}
    for i, b in enumerate(tokens):
        text = "" if b is None else b.decode("utf-8", errors="replace")
        alpha = [c.isalpha() for c in text]
        if b is None or not all(alpha):
            out["has_break"][i] = 1
            first = alpha.index(False) if False in alpha else len(alpha)
            last = len(alpha) - 1 - alpha[::-1].index(False) if False in alpha else -1
            out["lead"][i] = first
            out["trail"][i] = len(alpha) - 1 - last
            out["inner"][i] = max_word_length("".join(c if a else " " for c, a in
                                                      zip(text[first:last + 1], alpha[first:last + 1],
                                                          strict=True)))
        else:
            out["length"][i] = len(alpha)
    return out


def short_words(
    lm, max_letters: int = 5, tokens: list | None = None, mask: bool = True
) -> Potential:
    """``phi(s) = 1[every word of the text has at most max_letters letters]``, on device.

    Args:
        lm: the target's model (its tokenizer gives each token's bytes).
        max_letters: ``k``.
        tokens: optional ``[V]`` bytes per token id.
        mask: give the weights of every next token (``logw_next``: the proposal never draws a
            forbidden token); ``False`` checks the drawn token only (``update``), the semantics of
            a host prefix check such as LLaMPPL's ``condition``.
    """
    if tokens is None:
        if getattr(lm, "tokenizer", None) is None:
            raise ValueError("short_words: the model has no tokenizer; pass tokens=.")
        tokens = token_bytes(lm.tokenizer, lm.vocab_size)
    st = {k: jnp.asarray(v) for k, v in word_stats(list(tokens)).items()}
    k = int(max_letters)
    if k < 1:
        raise ValueError(f"short_words: max_letters must be >= 1, got {max_letters}.")

    def init(p, prompt, num_tokens):
        return jnp.zeros((), jnp.int32)

    def ok(p, L):
        brk = p["has_break"] == 1
        cont = L + p["length"] <= k
        split = (L + p["lead"] <= k) & (p["inner"] <= k) & (p["trail"] <= k)
        return jnp.where(brk, split, cont)

    def logw_next(p, L, t):
        return jnp.where(ok(p, L), 0.0, -jnp.inf)

    def update(p, L, s, t):
        new = jnp.where(p["has_break"][s] == 1, p["trail"][s], L + p["length"][s])
        if mask:
            return new, jnp.zeros((), jnp.float32)
        return new, jnp.where(ok(p, L)[s], 0.0, -jnp.inf)

    return Potential(init=init, update=update, logw_next=logw_next if mask else None, params=st,
                     name=f"short_words({k})", info={"kind": "short_words", "max_letters": k})


def _token_strings(lm) -> list[str | None]:
    """Each token's text: UTF-8 of its bytes, else the tokenizer's token string (genlm-backend's
    ``str_vocab`` convention); ``None`` for special or undefined ids."""
    tb = token_bytes(lm.tokenizer, lm.vocab_size)
    out = []
    for i, b in enumerate(tb):
        if b is None:
            out.append(None)
            continue
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(lm.tokenizer.convert_ids_to_tokens(i))
    return out


def llamppl_short_words(lm, max_letters: int = 5, tokens: list | None = None) -> Potential:
    """LLaMPPL 0.2.3's ``examples/hard_constraints.py`` mask, exactly, on device.

    With ``i = min(k, len(last word of text.split()))`` for the text generated so far, token ``v``
    is allowed iff it is not EOS, has no newline, has a letter or an ASCII punctuation character,
    ``len(v.strip()) <= k``, and ``not v[0].isalpha() or i + len(v) <= k``. Every token (the first
    included) is masked and EOS is never allowed, so ``Z = P(all T tokens allowed)``. The state is
    ``(i, text ends in whitespace)``, updated from per-token lengths of the whitespace-split
    pieces.
    """
    import string

    k = int(max_letters)
    strs = _token_strings(lm) if tokens is None else list(tokens)
    V = len(strs)
    eos = getattr(lm, "eos_token_id", None)
    f = {n: np.zeros(V, np.int32) for n in
         ("base", "first_alpha", "length", "all_ws", "starts_ws", "ends_ws", "multi",
          "len_first", "len_last")}
    punct = set(string.punctuation)
    for i, v in enumerate(strs):
        if v is None or v == "" or i == eos:
            continue
        f["base"][i] = int("\n" not in v and any(c.isalpha() or c in punct for c in v)
                           and len(v.strip()) <= k)
        f["first_alpha"][i] = int(v[0].isalpha())
        f["length"][i] = len(v)
        pieces = v.split()
        f["all_ws"][i] = int(not pieces)
        f["starts_ws"][i] = int(v[0].isspace())
        f["ends_ws"][i] = int(v[-1].isspace())
        f["multi"][i] = int(len(pieces) > 1)
        f["len_first"][i] = len(pieces[0]) if pieces else 0
        f["len_last"][i] = len(pieces[-1]) if pieces else 0
    p = {n: jnp.asarray(x) for n, x in f.items()}

    def init(p, prompt, num_tokens):
        return jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32)

    def logw_next(p, state, t):
        i, _ = state
        ok = (p["base"] == 1) & ((p["first_alpha"] == 0) | (i + p["length"] <= k))
        return jnp.where(ok, 0.0, -jnp.inf)

    def update(p, state, s, t):
        i, ws = state
        cont = (p["all_ws"][s] == 0) & (p["starts_ws"][s] == 0) & (ws == 0)
        i_cont = jnp.where(p["multi"][s] == 1, jnp.minimum(k, p["len_last"][s]),
                           jnp.minimum(k, i + p["len_first"][s]))
        i_new = jnp.where(p["all_ws"][s] == 1, i,
                          jnp.where(cont, i_cont, jnp.minimum(k, p["len_last"][s])))
        ws_new = jnp.where(p["all_ws"][s] == 1, 1, p["ends_ws"][s])
        return (i_new.astype(jnp.int32), ws_new.astype(jnp.int32)), jnp.zeros((), jnp.float32)

    return Potential(init=init, update=update, logw_next=logw_next, params=p,
                     name=f"llamppl_short_words({k})",
                     info={"kind": "llamppl_short_words", "max_letters": k})


def llamppl_allowed(text: str, v: str | None, k: int = 5) -> bool:
    """The host reference of :func:`llamppl_short_words`'s rule for one token after ``text``."""
    import string

    if v is None or v == "":
        return False
    words = text.split()
    i = min(k, len(words[-1])) if words else 0
    return ("\n" not in v and any(c.isalpha() or c in string.punctuation for c in v)
            and len(v.strip()) <= k and (not v[0].isalpha() or i + len(v) <= k))
