r"""Regular-expression and JSON-schema constraints compiled to device tables (outlines-core).

outlines-core builds the token-level automaton of a pattern over the model's vocabulary
(``Index(pattern, vocabulary).get_transitions()``: state -> {token: next state}). We export it
once into three arrays:

- ``token_class [V]``: tokens with identical transition columns share a class (most tokens fall in
  a few classes), including every model id the tokenizer does not define (never allowed);
- ``next_state [S + 1, C]``: the next state of each state and class, with a dead state ``S``;
- ``final [S + 1]``: accepting states.

So the mask of every next token is one gather, ``next_state[x][token_class] != dead``, and the
state update another. When the ``[S + 1, V]`` table of every state's mask fits in
``ROW_TABLE_BYTES`` (bool) it is precomputed, and the mask is one row per particle instead
(contiguous, about 17 % less time per sweep than the class gather on the embedded model). EOS is allowed only in accepting states. As a potential (:func:`regex`):
``logw_next = 0`` for tokens that keep the text extendable to a match and ``-inf`` otherwise, and
the completion value is ``0`` iff the state is accepting, so ``phi(s) = 1`` exactly when the
decoded text of the complete sequence (without EOS) matches the whole pattern, and the prefix value
is ``1`` exactly when the text can still be extended to a match.
"""

import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from lm_inference.potentials.base import Potential

__all__ = ["TokenDFA", "compile_regex", "regex", "json_schema", "token_bytes"]

DEFAULT_MAX_BYTES = 256 * 2**20
#: largest ``[S + 1, V]`` bool table of per-state masks kept on the device (else the class gather)
ROW_TABLE_BYTES = 64 * 2**20
_SENTINEL = "\ue000"  # a private-use character marking the end of the text


class TokenDFA(NamedTuple):
    """A token-level automaton as arrays (module docstring)."""

    token_class: np.ndarray  # [V] int32
    next_state: np.ndarray  # [S + 1, C] int32, row S is the dead state
    final: np.ndarray  # [S + 1] bool
    initial: int

    @property
    def dead(self) -> int:
        return self.next_state.shape[0] - 1

    @property
    def nbytes(self) -> int:
        """Device memory of the tables."""
        return self.token_class.nbytes + self.next_state.nbytes + self.final.nbytes

    def allowed(self, state: int) -> np.ndarray:
        """``[V]`` bool: the tokens allowed in ``state`` (host-side helper)."""
        return self.next_state[state][self.token_class] != self.dead


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's printable map from bytes to unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _decoder_kinds(tokenizer) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    dec = json.loads(backend.to_str()).get("decoder") or {}
    kinds, todo = set(), [dec]
    while todo:
        d = todo.pop()
        if isinstance(d, dict):
            kinds.add(d.get("type"))
            todo.extend(d.get("decoders", []) or [])
    return kinds


def token_bytes(tokenizer, vocab_size: int) -> list[bytes | None]:
    """The bytes each token id contributes to decoded text (``None``: special or undefined).

    Byte-level BPE tokens (GPT-2, Llama 3, Qwen) map back through the byte-to-unicode table;
    SentencePiece-style tokens map ``▁`` to a space and ``<0xAB>`` to the byte ``0xAB``. Ids at
    or beyond the tokenizer's size (padded model vocabularies) are ``None``.
    """
    kinds = _decoder_kinds(tokenizer)
    byte_level = "ByteLevel" in kinds
    inv = _byte_decoder()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out: list[bytes | None] = [None] * vocab_size
    for i in range(min(len(tokenizer), vocab_size)):
        if i in special:
            continue
        tok = tokenizer.convert_ids_to_tokens(i)
        if tok is None:
            continue
        if byte_level and all(c in inv for c in tok):
            b = bytes(inv[c] for c in tok)
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            b = bytes([int(tok[3:5], 16)])
        else:
            b = tok.replace("\u2581", " ").encode("utf-8")
        out[i] = b if b else None
    return out


def compile_regex(
    pattern: str,
    tokens: list[bytes | None],
    eos: int | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> TokenDFA:
    """The :class:`TokenDFA` of ``pattern`` (full match) over a vocabulary given as token bytes.

    Args:
        pattern: a regular expression (outlines-core's syntax, Rust ``regex``-like).
        tokens: ``[V]`` bytes of each token id (``None``: never allowed), e.g. :func:`token_bytes`.
        eos: the EOS id (allowed only in accepting states), or ``None``.
        max_bytes: refuse automata whose tables exceed this many bytes.
    """
    from outlines_core import Index, Vocabulary

    V = len(tokens)
    groups: dict[bytes, list[int]] = {}
    for i, b in enumerate(tokens):
        if b is not None and i != eos:
            groups.setdefault(b, []).append(i)
    if not groups:
        raise ValueError("compile_regex: the vocabulary has no tokens with text.")
    # outlines-core 0.2.14 drops the transitions out of an accepting state into a non-accepting
    # one (fixed upstream after the release, commit 2ba0b24): compile ``(?:pattern)<sentinel>``
    # instead, with the sentinel as an extra token, so no state before the sentinel is a match
    # state; a state accepts the original pattern iff its sentinel transition accepts.
    sentinel = V
    groups.setdefault(_SENTINEL.encode("utf-8"), []).append(sentinel)
    fake_eos = V + 1 if eos is None else int(eos)
    try:
        Index(pattern, Vocabulary(fake_eos, {b"a": [0]}))  # the user's pattern alone: errors
    except Exception as e:  # outlines-core raises plain exceptions for bad patterns
        if "incompatible" not in str(e).lower() and "vocabulary" not in str(e).lower():
            raise ValueError(f"regex: cannot compile {pattern!r}: {e}") from e
    try:
        index = Index(f"(?:{pattern}){_SENTINEL}", Vocabulary(fake_eos, groups))
    except Exception as e:
        raise ValueError(f"regex: cannot compile {pattern!r} over this vocabulary: {e}") from e
    trans = index.get_transitions()
    sentinel_finals = set(index.get_final_states())
    init = index.get_initial_state()
    finals = {st for st, tr in trans.items() if tr.get(sentinel) in sentinel_finals}
    states = sorted((set(trans) - sentinel_finals) | finals | {init})
    sid = {s: i for i, s in enumerate(states)}
    S = len(states)
    # class of each token: hash of its transition column over all states
    h = np.zeros(V, np.uint64)
    mult = np.uint64(1_000_003)
    cols = []
    for st in states:
        col = np.full(V, S, np.int32)
        tr = trans.get(st, {})
        tr = {k: x for k, x in tr.items() if x in sid}  # drop the sentinel's transitions
        if tr:
            ids = np.fromiter(tr.keys(), np.int64, len(tr))
            nxt = np.fromiter((sid[x] for x in tr.values()), np.int64, len(tr))
            keep = ids < V
            col[ids[keep]] = nxt[keep]
        if eos is not None:
            col[eos] = sid[st] if st in finals else S
        h = h * mult + (col.astype(np.uint64) + np.uint64(1))
        cols.append(col)
    _, rep, cls = np.unique(h, return_index=True, return_inverse=True)
    C = rep.shape[0]
    size = (S + 1) * C * 4 + V * 4
    if size > max_bytes:
        raise ValueError(
            f"regex: the automaton of this pattern has {S} states x {C} token classes = "
            f"{size / 2**20:.1f} MiB of tables, over the budget max_bytes = "
            f"{max_bytes / 2**20:.1f} MiB. Bounded repetition (x{{m,n}}, JSON maxLength / "
            "maxItems) multiplies the states: loosen it, or raise max_bytes."
        )
    table = np.full((S + 1, C), S, np.int32)
    for i, col in enumerate(cols):
        table[i] = col[rep]
        if not np.array_equal(table[i][cls], col):  # a hash collision (never seen; be exact)
            raise RuntimeError("compile_regex: token-class hash collision; please report.")
    final = np.zeros(S + 1, bool)
    final[[sid[s] for s in finals]] = True
    return TokenDFA(cls.astype(np.int32), table, final, sid[init])


def _dfa_potential(dfa: TokenDFA, name: str, info: dict,
                   row_bytes: int = ROW_TABLE_BYTES) -> Potential:
    params = {
        "token_class": jnp.asarray(dfa.token_class),
        "next_state": jnp.asarray(dfa.next_state),
        "final": jnp.asarray(dfa.final),
    }
    dead = dfa.dead
    init_state = int(dfa.initial)
    rows = dfa.next_state.shape[0] * dfa.token_class.shape[0]
    if rows <= row_bytes:
        # the mask of every state precomputed: one contiguous row per particle instead of a
        # [V] gather through the class map (measured below in benchmarks/bench_constraints.py)
        params["allowed"] = jnp.asarray(dfa.next_state[:, dfa.token_class] != dead)

    def init(p, prompt, num_tokens):
        return jnp.asarray(init_state, jnp.int32)

    def logw_next(p, x, t):
        if "allowed" in p:
            return jnp.where(p["allowed"][x], 0.0, -jnp.inf)
        return jnp.where(p["next_state"][x][p["token_class"]] == dead, -jnp.inf, 0.0)

    def update(p, x, s, t):
        return p["next_state"][x, p["token_class"][s]], jnp.zeros((), jnp.float32)

    def complete(p, x, tokens):
        return jnp.where(p["final"][x], 0.0, -jnp.inf)

    info = {**info, "num_states": dfa.next_state.shape[0] - 1,
            "num_classes": dfa.next_state.shape[1], "dfa": dfa,
            "nbytes": sum(int(x.nbytes) for x in params.values())}
    return Potential(init=init, update=update, logw_next=logw_next, complete=complete,
                     params=params, name=name, info=info)


def _lm_tokens(lm) -> list[bytes | None]:
    tok = getattr(lm, "tokenizer", None)
    if tok is None:
        raise ValueError("regex: the model has no tokenizer; pass tokens= (bytes of each id).")
    return token_bytes(tok, lm.vocab_size)


def regex(lm, pattern: str, tokens: list | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
    """``phi(s) = 1[text(s) fully matches pattern]`` with on-device masking (module docstring).

    Args:
        lm: the target's model (its tokenizer gives each token's bytes).
        pattern: the regular expression.
        tokens: optional ``[V]`` bytes per token id (overrides the tokenizer).
        max_bytes: memory budget of the automaton's tables.
    """
    toks = _lm_tokens(lm) if tokens is None else list(tokens)
    if len(toks) != lm.vocab_size:
        raise ValueError(f"regex: tokens has {len(toks)} entries, the model {lm.vocab_size}.")
    dfa = compile_regex(pattern, toks, getattr(lm, "eos_token_id", None), max_bytes)
    return _dfa_potential(dfa, f"regex({pattern!r})", {"kind": "regex", "pattern": pattern})


def json_schema(
    lm,
    schema: dict | str | Path,
    whitespace_pattern: str | None = None,
    tokens: list | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Potential:
    """``phi(s) = 1[text(s) is a JSON document valid for schema]`` (outlines-core's
    schema-to-regex translation, then :func:`regex`).

    Args:
        lm: the target's model.
        schema: a JSON schema as a dict, a JSON string, or a path to a ``.json`` file.
        whitespace_pattern: regex of the whitespace allowed between tokens (outlines-core's
            default ``[ ]?`` keeps the automaton small).
        tokens: optional ``[V]`` bytes per token id.
        max_bytes: memory budget of the automaton's tables.
    """
    from outlines_core.json_schema import build_regex_from_schema

    if isinstance(schema, Path) or (isinstance(schema, str) and schema.endswith(".json")):
        schema = Path(schema).read_text()
    text = json.dumps(schema) if isinstance(schema, dict) else str(schema)
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"json_schema: the schema is not valid JSON: {e}") from e
    try:
        pattern = build_regex_from_schema(text, whitespace_pattern)
    except Exception as e:
        raise ValueError(f"json_schema: outlines-core cannot translate the schema: {e}") from e
    toks = _lm_tokens(lm) if tokens is None else list(tokens)
    dfa = compile_regex(pattern, toks, getattr(lm, "eos_token_id", None), max_bytes)
    return _dfa_potential(dfa, "json_schema", {"kind": "json_schema", "schema": text,
                                                "pattern": pattern})
