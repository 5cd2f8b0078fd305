r"""Host potentials: arbitrary Python on the decoded sequences, through ``jax.pure_callback``.

- :func:`host`: a terminal ``log phi`` of each complete sequence (one callback per particle).
- :func:`host_prefix`: genlm-control's ``prefix`` / ``complete`` pair, called **once per step for
  all particles** (one batched callback with every particle's prefix): ``prefix(xs) -> [N]`` log
  prefix values ``log Phi(s_{1:t})`` (``-inf``: no extension can be accepted), ``complete(xs)``
  the log value of complete sequences (default: the prefix value). The increment at step ``t``
  is ``prefix(s_{1:t}) - prefix(s_{1:t-1})``; at completion ``complete(s) - prefix(s)``.

Errors raised inside the callable, or values that are not floats (``None``), are reported after the
sweep as a :class:`~lm_inference.potentials.PotentialError` naming the potential, with the
original exception chained.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lm_inference.potentials.base import Potential, PotentialError

__all__ = ["host", "host_prefix", "raise_host_errors"]

_ERRORS: list[tuple[str, BaseException | str]] = []


def raise_host_errors() -> None:
    """Raise (and clear) the first error recorded by a host callback since the last call."""
    if not _ERRORS:
        return
    name, err = _ERRORS[0]
    _ERRORS.clear()
    if isinstance(err, BaseException):
        raise PotentialError(
            f"host potential {name!r} raised {type(err).__name__}: {err}"
        ) from err
    raise PotentialError(f"host potential {name!r} {err}")


def _as_floats(name: str, x, n: int | None) -> np.ndarray:
    if x is None:
        _ERRORS.append((name, "returned None; expected a float log weight (use -inf for zero)."))
        return np.full(() if n is None else (n,), np.nan, np.float32)
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        _ERRORS.append(
            (name, f"returned {arr.dtype} values; expected float log weights (0.0 / -inf for "
             "an indicator).")
        )
        return np.full(() if n is None else (n,), np.nan, np.float32)
    want = () if n is None else (n,)
    if arr.shape != want:
        _ERRORS.append((name, f"returned shape {arr.shape}; expected {want or 'a scalar'}."))
        return np.full(want, np.nan, np.float32)
    arr = arr.astype(np.float32)
    if np.isnan(arr).any():
        _ERRORS.append((name, "returned NaN; a log weight must be a float in [-inf, inf) "
                        "(map undefined values to -inf)."))
    elif (arr == np.inf).any():
        _ERRORS.append((name, "returned +inf; phi must be finite (an unbounded potential gives "
                        "log_Z = inf)."))
    return arr


def host(fn: Callable, decode: Callable | None = None, name: str | None = None) -> Potential:
    """A terminal Python ``log phi`` on the host via ``jax.pure_callback``.

    Args:
        fn: ``tokens (numpy [T] int) -> float`` or, with ``decode``, ``text -> float``.
        decode: optional ``tokens -> text`` (e.g. a tokenizer's ``decode``).
        name: label for messages.
    """
    label = name or getattr(fn, "__name__", "host")

    def np_fn(tokens):
        try:
            x = fn(decode(list(np.asarray(tokens))) if decode is not None else np.asarray(tokens))
        except Exception as e:  # reported after the sweep, with the traceback chained
            _ERRORS.append((label, e))
            return np.float32(np.nan)
        return _as_floats(label, x, None)

    def complete(params, state, tokens):
        return jax.pure_callback(
            np_fn, jax.ShapeDtypeStruct((), jnp.float32), tokens, vmap_method="sequential"
        )

    return Potential(complete=complete, name=f"host({label})", info={"kind": "host"})


def _texts(tokens: np.ndarray, lengths: np.ndarray, eos: int, decode):
    rows = []
    for row, n in zip(tokens, lengths, strict=True):
        r = [int(x) for x in row[: int(n)]]
        if eos >= 0 and eos in r:
            r = r[: r.index(eos)]
        rows.append(decode(r) if decode is not None else np.asarray(r, np.int32))
    return rows


def host_prefix(
    prefix: Callable,
    complete: Callable | None = None,
    decode: Callable | None = None,
    eos: int = -1,
    name: str | None = None,
) -> Potential:
    """genlm-control-style prefix / complete potential in Python, one callback per step.

    Args:
        prefix: ``list of N prefixes -> [N]`` log prefix values (a prefix is the decoded text with
            ``decode``, else a numpy array of token ids; EOS removed).
        complete: ``list of N sequences -> [N]`` log values at completion (default ``prefix``).
        decode: ``list[int] -> str`` (e.g. ``lm.tokenizer.decode``).
        eos: the EOS id stripped from prefixes (``-1``: none).
        name: label for messages.
    """
    label = name or getattr(prefix, "__name__", "host_prefix")
    complete = prefix if complete is None else complete

    def call(which):
        f = prefix if which == "prefix" else complete

        def np_fn(tokens, lengths):
            tokens, lengths = np.asarray(tokens), np.asarray(lengths)
            n = tokens.shape[0]
            try:
                x = f(_texts(tokens, lengths, eos, decode))
            except Exception as e:
                _ERRORS.append((label, e))
                return np.full(n, np.nan, np.float32)
            return _as_floats(label, x, n)

        return np_fn

    def cb(which, buf, lengths):
        n = buf.shape[0]
        return jax.pure_callback(
            call(which), jax.ShapeDtypeStruct((n,), jnp.float32), buf, lengths,
            vmap_method="sequential",
        )

    def init(params, prompt, num_tokens):
        return jnp.zeros(num_tokens + 1, jnp.int32), jnp.zeros((), jnp.float32)

    def update(params, state, tokens, t):
        buf, prev = state
        buf = buf.at[:, t].set(tokens)
        val = cb("prefix", buf, jnp.full(tokens.shape, t + 1, jnp.int32))
        inc = jnp.where(prev == -jnp.inf, -jnp.inf, val - prev)
        return (buf, val), inc

    def complete_fn(params, state, tokens):
        buf, prev = state
        val = cb("complete", tokens, jnp.full(tokens.shape[:1], tokens.shape[1], jnp.int32))
        return jnp.where(prev == -jnp.inf, -jnp.inf, val - prev)

    return Potential(
        init=init,
        update=update,
        complete=complete_fn,
        batched=True,
        name=f"host_prefix({label})",
        info={"kind": "host"},
    )
