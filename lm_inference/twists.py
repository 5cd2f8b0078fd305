r"""Twist parametrizations for :func:`lm_inference.smc`.

A twist is a pair ``Twist(apply, params)`` with
``apply(params, hidden [N, H], tokens [N, T], t) -> log psi_t [N, V]``: the log twist of every
possible next token ``v`` at step ``t`` given the prefix, from the frozen base LM's last hidden
state ``hidden`` (so it shares the LM's forward pass) and/or the tokens so far. Keep one
``Twist.apply`` object per architecture: compiled sweeps are cached on it, and updating ``params``
(training) reuses them.

- :func:`head_twist`: a linear or MLP head (flax nnx) on ``[hidden, onehot(t)]`` (the paper's
  parametrization), optionally with ``bag(s_<t) = sum_{i<t} E[s_i]``, a learned embedding bag of
  the tokens generated so far (``prefix_size > 0``): it tells the twist what has already
  happened, e.g. that a required word was already written, which the last hidden state of a
  small LM does not reliably carry (on the embedded model and "contains ' love'", T = 8, CTL 200
  steps: sd of log Z_hat at N = 64 0.68 without, 0.30-0.40 with ``prefix_size=64``).
- :func:`conditional_head_twist`: the same with a conditioning vector (e.g. an embedding of the
  infilling continuation) concatenated to the input: a conditional twist.
- :func:`zero_twist`: ``log psi = 0`` (plain SMC), as a twist object.

Checkpoints (:func:`save_twist`, :func:`load_twist`; :func:`save_params` / :func:`load_params`
for any pytree) are safetensors files whose metadata records what the twist was trained for
(:func:`twist_record`: the model's architecture, sizes and a sample of its weights, ``T``, the
prompt, the head's kind and sizes, the potential's name); loading with ``expect=`` checks the
record against the target and raises :class:`TwistMismatchError` naming every difference.
"""

import functools
import hashlib
import json
import os
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kernels.types import Array, PRNGKey

__all__ = [
    "Twist",
    "TwistHead",
    "head_twist",
    "conditional_head_twist",
    "probability_twist",
    "zero_twist",
    "save_params",
    "load_params",
    "save_twist",
    "load_twist",
    "read_record",
    "twist_record",
    "check_record",
    "potential_name",
    "TwistMismatchError",
    "RECORD_KEY",
]


class Twist(NamedTuple):
    """``apply(params, hidden, tokens, t) -> log psi_t [N, V]`` and its ``params``."""

    apply: Any
    params: Any


class TwistHead(nnx.Module):
    """``log psi_t(s_<t, v) = f([h_t, onehot(t), sum_{i<t} E[s_i], c])_v``, ``f`` linear or an MLP.

    The output layer and the embedding bag ``E`` start at zero, so an untrained head is the
    no-twist proposal ``p0``.

    Args:
        hidden_size: ``H`` of the LM's hidden state.
        vocab_size: ``V``.
        num_tokens: ``T`` (steps get a one-hot position input).
        kind: ``"linear"`` or ``"mlp"``.
        width: MLP width.
        context_size: size of an optional conditioning vector ``c`` (0: none).
        prefix_size: width of the embedding bag ``E [V, prefix_size]`` of generated tokens
            (0: none).
        rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        num_tokens: int,
        kind: str = "mlp",
        width: int = 128,
        context_size: int = 0,
        prefix_size: int = 0,
        *,
        rngs: nnx.Rngs,
    ):
        if kind not in ("linear", "mlp"):
            raise ValueError(f"TwistHead: kind must be 'linear' or 'mlp', got {kind!r}.")
        self.num_tokens = num_tokens
        d = hidden_size + num_tokens + context_size + prefix_size
        self.prefix = (
            nnx.Embed(vocab_size, prefix_size, embedding_init=nnx.initializers.zeros, rngs=rngs)
            if prefix_size
            else None
        )
        zeros = nnx.initializers.zeros
        if kind == "mlp":
            self.hidden_layer = nnx.Linear(d, width, rngs=rngs)
            self.out = nnx.Linear(width, vocab_size, kernel_init=zeros, rngs=rngs)
        else:
            self.hidden_layer = None
            self.out = nnx.Linear(d, vocab_size, kernel_init=zeros, rngs=rngs)

    def __call__(
        self,
        hidden: Array,
        t: Array,
        context: Array | None = None,
        tokens: Array | None = None,
    ) -> Array:
        """``hidden [N, H]``, step ``t``, ``tokens [N, T]`` (entries at ``>= t`` are ignored)."""
        hidden = hidden.astype(jnp.float32)
        pos = jax.nn.one_hot(jnp.broadcast_to(t, hidden.shape[:1]), self.num_tokens)
        parts = [hidden, pos]
        if self.prefix is not None:
            if tokens is None:
                raise ValueError("TwistHead: prefix_size > 0 needs the tokens so far.")
            mask = jnp.arange(tokens.shape[-1]) < t
            parts.append(jnp.einsum("t,ntd->nd", mask.astype(jnp.float32), self.prefix(tokens)))
        parts = parts + (
            []
            if context is None
            else [jnp.broadcast_to(context, hidden.shape[:1] + context.shape[-1:])]
        )
        x = jnp.concatenate(parts, axis=-1)
        if self.hidden_layer is not None:
            x = jax.nn.gelu(self.hidden_layer(x))
        return self.out(x)


def head_twist(
    key: PRNGKey,
    hidden_size: int,
    vocab_size: int,
    num_tokens: int,
    kind: str = "mlp",
    width: int = 128,
    prefix_size: int = 0,
) -> Twist:
    """A fresh :class:`TwistHead` as a :class:`Twist` (params: the nnx state).

    Args:
        key: PRNG key for the initialization.
        hidden_size: ``H``.
        vocab_size: ``V``.
        num_tokens: ``T``.
        kind: ``"linear"`` or ``"mlp"``.
        width: MLP width.
        prefix_size: width of the embedding bag of generated tokens (0: none).
    """
    head = TwistHead(
        hidden_size,
        vocab_size,
        num_tokens,
        kind,
        width,
        prefix_size=prefix_size,
        rngs=nnx.Rngs(key),
    )
    graphdef, state = nnx.split(head)

    def apply(state, hidden, tokens, t):
        return nnx.merge(graphdef, state)(hidden, t, tokens=tokens)

    apply.spec = _head_spec(hidden_size, vocab_size, num_tokens, kind, width, 0, prefix_size)
    return Twist(apply, state)


def conditional_head_twist(
    key: PRNGKey,
    hidden_size: int,
    vocab_size: int,
    num_tokens: int,
    context_size: int,
    kind: str = "mlp",
    width: int = 128,
) -> Twist:
    """A conditional twist: params ``(state, context)``; ``context [C]`` (e.g. the mean embedding
    of the infilling continuation) is part of the input, so one head serves many conditions by
    swapping ``params[1]``."""
    head = TwistHead(
        hidden_size, vocab_size, num_tokens, kind, width, context_size, rngs=nnx.Rngs(key)
    )
    graphdef, state = nnx.split(head)

    def apply(params, hidden, tokens, t):
        state, context = params
        return nnx.merge(graphdef, state)(hidden, t, jax.lax.stop_gradient(context))

    apply.spec = _head_spec(hidden_size, vocab_size, num_tokens, kind, width, context_size, 0)
    return Twist(apply, (state, jnp.zeros(context_size, jnp.float32)))


def probability_twist(twist: Twist) -> Twist:
    """``log psi = log sigmoid(f)`` for the twist's output ``f``: a twist that is a probability,
    ``psi in (0, 1)`` (FUDGE's classifier ``P(phi = 1 | s_{1:t})``). Recorded in checkpoints as
    ``head["output"] = "log_sigmoid"``, so :func:`load_twist` rebuilds the same function."""
    spec = getattr(twist.apply, "spec", None)
    if getattr(twist.apply, "log_sigmoid", False) or (spec or {}).get("output") == "log_sigmoid":
        return twist  # already a probability (also without a spec): never wrapped twice
    inner = twist.apply

    def apply(params, hidden, tokens, t):
        return jax.nn.log_sigmoid(inner(params, hidden, tokens, t))

    apply.log_sigmoid = True
    if spec is not None:
        apply.spec = {**spec, "output": "log_sigmoid"}
    return Twist(apply, twist.params)


def _head_spec(hidden_size, vocab_size, num_tokens, kind, width, context_size, prefix_size):
    """What a checkpoint records about a :class:`TwistHead` (``Twist.apply.spec``)."""
    return {
        "kind": kind,
        "hidden_size": int(hidden_size),
        "vocab_size": int(vocab_size),
        "num_tokens": int(num_tokens),
        "width": int(width) if kind == "mlp" else None,
        "context_size": int(context_size),
        "prefix_size": int(prefix_size),
    }


def _zero_apply(params, hidden, tokens, t):
    return jnp.zeros(hidden.shape[:1] + (params.shape[0],), jnp.float32)


def zero_twist(vocab_size: int) -> Twist:
    """``log psi = 0``: the proposal is ``p0`` (plain SMC)."""
    return Twist(_zero_apply, jnp.zeros(vocab_size))


def _flat(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


# ---------------------------------------------------------------------------------------------
# What a checkpoint was trained for
# ---------------------------------------------------------------------------------------------

RECORD_KEY = "ppl_twist_record"
"""The safetensors metadata key holding the JSON :func:`twist_record` of a checkpoint."""

_RECORD_FORMAT = 1
_NUM_WEIGHT_SAMPLES = 16


class TwistMismatchError(ValueError):
    """A twist checkpoint was trained for another target (model, ``T``, prompt, head, potential
    or training method). ``mismatches`` lists the groups that differ."""

    def __init__(self, message: str, mismatches: list[str]):
        super().__init__(message)
        self.mismatches = mismatches


def _short(text: str, limit: int = 300) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    return f"{text[:200]}...sha1:{digest}"


def _describe(x, depth: int = 0) -> str:
    """A stable description of a potential: qualified names and the values it closes over
    (no memory addresses), so that ``contains_token(2)`` and ``contains_token(3)`` differ."""
    import types

    if depth > 4:
        return f"<{type(x).__name__}>"
    if x is None or isinstance(x, bool | int | float | str):
        return repr(x)
    if isinstance(x, np.generic):
        return repr(x.item())
    if isinstance(x, types.ModuleType):  # e.g. jnp in a closure (it has .shape and .dtype)
        return f"<module {x.__name__}>"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        shape = tuple(int(d) for d in x.shape)
        size = int(np.prod(shape)) if shape else 1
        if size <= 4096:
            digest = hashlib.sha1(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()[:10]
            return f"array{shape}:{x.dtype}:{digest}"
        return f"array{shape}:{x.dtype}"
    if isinstance(x, tuple | list):
        return "(" + ", ".join(_describe(v, depth + 1) for v in x) + ")"
    if isinstance(x, dict):
        items = sorted(x.items(), key=lambda kv: str(kv[0]))
        return "{" + ", ".join(f"{k}: {_describe(v, depth + 1)}" for k, v in items) + "}"
    if isinstance(x, functools.partial):
        args = [_describe(a, depth + 1) for a in x.args]
        args += [f"{k}={_describe(v, depth + 1)}" for k, v in sorted(x.keywords.items())]
        return f"partial({_describe(x.func, depth + 1)}, {', '.join(args)})"
    if isinstance(x, types.FunctionType):
        name = f"{x.__module__}.{x.__qualname__}"
        cells = []
        for var, cell in zip(x.__code__.co_freevars, x.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            cells.append(f"{var}={_describe(value, depth + 1)}")
        return f"{name}({', '.join(cells)})" if cells else name
    if callable(x) and hasattr(x, "__qualname__"):  # builtins, jitted functions, classes
        return f"{getattr(x, '__module__', '')}.{x.__qualname__}"
    if type(x).__repr__ is not object.__repr__:
        r = repr(x)
        if " at 0x" not in r:
            return r
    t = type(x)
    fields = getattr(x, "__dict__", {})
    inner = ", ".join(
        f"{k}={_describe(v, depth + 1)}" for k, v in sorted(fields.items()) if not k.startswith("_")
    )
    return f"{t.__module__}.{t.__qualname__}({inner})"


def potential_name(potential) -> str:
    """The name a checkpoint records for a potential: its ``name`` attribute when it has one
    (the command line sets it to the ``--potential`` spec), else a stable description of the
    function and the values it closes over; ``"none"`` for ``phi = 1``."""
    if potential is None:
        return "none"
    name = getattr(potential, "name", None)
    if isinstance(name, str) and name not in ("", "potential"):  # "potential": a generic default
        return name
    return _short(_describe(potential))


def _config_get(config, key):
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def _model_name(lm) -> str:
    path = getattr(lm, "path", None)
    if path is None:
        return str(_config_get(getattr(lm, "config", None), "model_type") or type(lm).__name__)
    parts = os.path.normpath(str(path)).split(os.sep)
    if len(parts) >= 3 and parts[-2] == "snapshots":  # a Hugging Face hub cache folder
        return f"{parts[-3]}@{parts[-1][:12]}"
    return parts[-1]


def _weight_sample(params) -> list[float]:
    """``_NUM_WEIGHT_SAMPLES`` evenly spaced entries of the largest parameter array: tells two
    models of the same architecture apart (another seed, a fine-tune) and survives a dtype
    change (compared with a relative tolerance)."""
    leaves = [x for x in jax.tree.leaves(params) if hasattr(x, "shape") and np.size(x) > 0]
    if not leaves:
        return []
    big = max(leaves, key=lambda x: int(np.prod(x.shape)))
    flat = np.linspace(0, int(np.prod(big.shape)) - 1, _NUM_WEIGHT_SAMPLES).astype(np.int64)
    idx = np.unravel_index(flat, big.shape)
    vals = np.asarray(jax.device_get(big[tuple(idx)]), np.float32)
    return [float(f"{v:.6g}") for v in vals]


def _int_or_none(x) -> int | None:
    return None if x is None else int(x)


def _model_record(lm) -> dict:
    return {
        "name": _model_name(lm),
        "model_type": _config_get(getattr(lm, "config", None), "model_type"),
        "vocab_size": int(lm.vocab_size),
        "hidden_size": int(lm.hidden_size),
        "num_layers": _int_or_none(getattr(lm, "num_layers", None)),
        "weights": _weight_sample(lm.params),
    }


def twist_record(target, twist: Twist | None = None, potential: str | None = None, **extra) -> dict:
    """What a twist checkpoint records about the target it was trained for.

    Args:
        target: the :class:`lm_inference.Target`.
        twist: the twist (its head's kind and sizes are recorded when ``twist.apply`` has a
            ``spec``, as :func:`head_twist` twists do).
        potential: the potential's name (default :func:`potential_name` of the target's).
        **extra: more entries (JSON-serializable), e.g. ``method="ctl"``; checked for equality.

    Returns:
        A JSON-serializable dict: ``model`` (name, ``model_type``, ``vocab_size``,
        ``hidden_size``, ``num_layers``, a sample of the weights), ``num_tokens`` (``T``),
        ``prompt`` (length, SHA-1 of the token ids, the first ids, EOS id), ``head``,
        ``potential``, and ``extra``.
    """
    ids = np.asarray(target.prompt_ids, np.int32)
    prompt = {
        "length": int(ids.size),
        "sha1": hashlib.sha1(ids.tobytes()).hexdigest(),
        "first_ids": ids[:16].tolist(),
        "eos_token_id": _int_or_none(getattr(target, "eos_token_id", None)),
    }
    if isinstance(getattr(target, "prompt", None), str):
        prompt["text"] = target.prompt[:200]
    spec = getattr(getattr(twist, "apply", None), "spec", None)
    return {
        "format": _RECORD_FORMAT,
        "model": _model_record(target.lm),
        "num_tokens": int(target.num_tokens),
        "prompt": prompt,
        "head": dict(spec) if spec is not None else None,
        "potential": potential if potential is not None else potential_name(target.log_potential),
        "extra": dict(extra),
    }


def _describe_model(m: dict) -> str:
    layers = f", {m['num_layers']} layers" if m.get("num_layers") is not None else ""
    return (
        f"{m.get('model_type')} {m.get('name')!r} (vocab {m.get('vocab_size')}, "
        f"hidden {m.get('hidden_size')}{layers})"
    )


def _describe_head(h: dict) -> str:
    parts = [str(h.get("kind"))]
    for k in ("width", "prefix_size", "context_size"):
        if h.get(k):
            parts.append(f"{k} {h[k]}")
    if h.get("output"):
        parts.append(f"output {h['output']}")
    return ", ".join(parts)


def _describe_prompt(p: dict) -> str:
    if "text" in p:
        return f"{p['text']!r} ({p['length']} tokens)"
    ids = p.get("first_ids", [])
    more = ", ..." if p.get("length", 0) > len(ids) else ""
    return f"token ids [{', '.join(map(str, ids))}{more}] ({p.get('length')} tokens)"


def _differences(saved: dict, expected: dict) -> list[tuple[str, str]]:
    """``(group, message)`` for every difference between two :func:`twist_record` s."""
    out = []
    ms, me = saved.get("model") or {}, expected.get("model") or {}
    arch = ("model_type", "vocab_size", "hidden_size", "num_layers")
    ws, we = np.asarray(ms.get("weights", [])), np.asarray(me.get("weights", []))
    if any(ms.get(k) != me.get(k) for k in arch if ms.get(k) is not None):
        msg = f"trained for {_describe_model(ms)}, this target's is {_describe_model(me)}"
        out.append(("model", f"model: {msg}"))
    elif ws.shape == we.shape and ws.size and not np.allclose(ws, we, rtol=2e-2, atol=1e-3):
        msg = (
            f"same architecture and sizes but different weights (trained for {ms.get('name')!r}, "
            f"this target's is {me.get('name')!r}: another checkpoint, fine-tune or random seed)"
        )
        out.append(("model", f"model: {msg}"))
    ts, te = saved.get("num_tokens"), expected.get("num_tokens")
    if ts != te:
        out.append(("num_tokens", f"T (num_tokens): trained for {ts}, this target has {te}"))
    ps, pe = saved.get("prompt") or {}, expected.get("prompt") or {}
    if ps.get("sha1") != pe.get("sha1"):
        msg = f"trained for {_describe_prompt(ps)}, this target's is {_describe_prompt(pe)}"
        out.append(("prompt", f"prompt: {msg}"))
    elif ps.get("eos_token_id") != pe.get("eos_token_id"):
        msg = f"trained with {ps.get('eos_token_id')}, this target has {pe.get('eos_token_id')}"
        out.append(("prompt", f"EOS token: {msg}"))
    hs, he = saved.get("head"), expected.get("head")
    # "output": log_sigmoid for probability twists (FUDGE, and RL since it fits one); an RL
    # checkpoint from before that has none and would be read with another function
    keys = ("kind", "width", "context_size", "prefix_size", "output")
    if hs and he and any(hs.get(k) != he.get(k) for k in keys):
        msg = f"trained as {_describe_head(hs)}, requested {_describe_head(he)}"
        out.append(("head", f"head: {msg}"))
    ps, pe = saved.get("potential"), expected.get("potential")
    if ps != pe:
        out.append(("potential", f"potential: trained for {ps!r}, this target's is {pe!r}"))
    xs, xe = saved.get("extra") or {}, expected.get("extra") or {}
    for k in sorted(set(xs) & set(xe)):
        if xs[k] != xe[k]:
            out.append((k, f"{k}: trained with {xs[k]!r}, requested {xe[k]!r}"))
    return out


_RESHAPING = ("num_tokens", "head")  # a twist for another T or head has other parameter shapes


def check_record(
    saved: dict | None,
    expected: dict,
    path: str | os.PathLike = "checkpoint",
    allow: tuple[str, ...] | list[str] = (),
    fix: str | None = None,
) -> list[str]:
    """Compare a checkpoint's :func:`twist_record` with the one of the target it is used for.

    Args:
        saved: the checkpoint's record (:func:`read_record`); ``None`` (a checkpoint written
            before records existed) warns that nothing can be checked.
        expected: :func:`twist_record` of the target (and twist) at hand.
        path: the checkpoint, for the message.
        allow: groups whose differences only warn: any of ``"model"``, ``"prompt"``,
            ``"potential"`` (and ``extra`` keys such as ``"method"``). A twist for another
            target keeps SMC unbiased but may make it much less efficient. ``"num_tokens"`` and
            ``"head"`` change the parameter shapes and cannot be allowed.
        fix: what to tell the user to do (default: train a twist for this target).

    Returns:
        The groups that differ (all allowed).

    Raises:
        TwistMismatchError: listing every difference, when one is not allowed.
    """
    if saved is None:
        warnings.warn(
            f"{path}: the checkpoint records nothing about what its twist was trained for "
            "(written before records existed), so it cannot be checked against this target.",
            stacklevel=3,
        )
        return []
    diffs = _differences(saved, expected)
    if not diffs:
        return []
    bad = [g for g, _ in diffs if g not in allow or g in _RESHAPING]
    lines = "\n".join(f"  - {m}" for _, m in diffs)
    if not bad:
        warnings.warn(f"{path}: twist used for another target (allowed):\n{lines}", stacklevel=3)
        return [g for g, _ in diffs]
    if fix is None:
        if any(g in _RESHAPING for g in bad):
            fix = (
                "train a twist for this target (lm_inference.train_twist, or `ppl-lm train` "
                "with the same --model, --prompt, --num-tokens, --potential); a twist for "
                "another T or another head cannot be reused."
            )
        else:
            fix = (
                "train a twist for this target (lm_inference.train_twist, or `ppl-lm train` "
                "with the same --model, --prompt, --num-tokens, --potential), or, if the "
                f"difference is intended, allow it (allow={tuple(bad)!r}; on the command line "
                "--allow-twist-mismatch): SMC stays unbiased with any twist, but a twist "
                "trained for another target can make it much less efficient."
            )
    raise TwistMismatchError(
        f"{path}: this twist was trained for a different target:\n{lines}\nFix: {fix}", bad
    )


def read_record(path: str | os.PathLike) -> dict | None:
    """The :func:`twist_record` stored in a checkpoint (``None`` if it has none)."""
    from safetensors import safe_open

    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"twist checkpoint {path} not found.")
    try:
        with safe_open(path, "numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise ValueError(f"{path} is not a safetensors twist checkpoint ({e}).") from e
    raw = meta.get(RECORD_KEY)
    return None if raw is None else json.loads(raw)


def save_params(path, params, metadata: dict | None = None, record: dict | None = None) -> None:
    """Save a twist's parameter pytree to a safetensors file (keys are tree paths).

    Args:
        path: the file.
        params: the pytree.
        metadata: more string metadata.
        record: what the twist was trained for (:func:`twist_record`), stored as JSON under
            :data:`RECORD_KEY` and checked by :func:`load_params` with ``expect=``.
    """
    from safetensors.numpy import save_file

    meta = {k: str(v) for k, v in (metadata or {}).items()}
    if record is not None:
        meta[RECORD_KEY] = json.dumps(record, allow_nan=False)
    save_file(_flat(params), str(path), metadata=meta)


def load_params(path, like, expect: dict | None = None, allow: tuple[str, ...] | list[str] = ()):
    """Load parameters saved by :func:`save_params` into the structure of ``like``.

    Args:
        path: the file.
        like: a pytree with the structure and shapes to load (entries of the file that it does
            not name are ignored, e.g. the optimizer state of a training checkpoint).
        expect: the :func:`twist_record` of the target the parameters are for; when given, the
            checkpoint's record is checked against it (:func:`check_record`) first.
        allow: record groups whose differences only warn (:func:`check_record`).

    Raises:
        TwistMismatchError: the checkpoint was trained for another target.
        ValueError: an entry is missing or has another shape.
    """
    from safetensors.numpy import load_file

    if expect is not None:
        check_record(read_record(path), expect, path, allow)
    data = load_file(str(path))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    out = []
    for p, x in leaves:
        k = jax.tree_util.keystr(p)
        if k not in data:
            raise ValueError(f"load_params: {path} has no entry {k}; was it saved for this twist?")
        if data[k].shape != np.shape(x):
            raise ValueError(f"load_params: {k} has shape {data[k].shape}, expected {np.shape(x)}.")
        out.append(jnp.asarray(data[k]))
    return jax.tree_util.tree_unflatten(treedef, out)


def save_twist(path, twist: Twist, target, potential: str | None = None, **extra) -> None:
    """Save ``twist.params`` (under ``"params"``) with the :func:`twist_record` of ``target``."""
    save_params(
        path, {"params": twist.params}, record=twist_record(target, twist, potential, **extra)
    )


def load_twist(
    path,
    target,
    twist: Twist | None = None,
    potential: str | None = None,
    allow: tuple[str, ...] | list[str] = (),
) -> Twist:
    """Load a twist checkpoint (:func:`save_twist`, or a :func:`lm_inference.train_twist`
    checkpoint) for ``target``, checking what it was trained for.

    Args:
        path: the checkpoint.
        target: the target the twist will be used for.
        twist: a twist with the structure to load into (default: a :func:`head_twist` of the
            kind and sizes recorded in the checkpoint, for the target's model and ``T``).
        potential: the name of the target's potential (default :func:`potential_name`).
        allow: record groups whose differences only warn (:func:`check_record`).

    Raises:
        TwistMismatchError: the checkpoint was trained for another model, ``T``, prompt, head
            or potential.
    """
    saved = read_record(path)
    if twist is None:
        head = (saved or {}).get("head") or {}
        if head.get("context_size"):
            raise ValueError(
                f"load_twist: {path} holds a conditional head; build it with "
                "conditional_head_twist and pass it as twist=."
            )
        twist = head_twist(
            jax.random.key(0),
            target.lm.hidden_size,
            target.lm.vocab_size,
            target.num_tokens,
            kind=head.get("kind", "mlp"),
            width=head.get("width") or 128,
            prefix_size=head.get("prefix_size", 0),
        )
    if ((saved or {}).get("head") or {}).get("output") == "log_sigmoid":
        twist = probability_twist(twist)  # trained as a probability (FUDGE)
    expected = twist_record(target, twist, potential)
    check_record(saved, expected, path, allow)
    params = load_params(path, {"params": twist.params})["params"]
    return twist._replace(params=params)
