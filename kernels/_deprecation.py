"""Renamed keyword arguments: the old name keeps working, with a ``DeprecationWarning``."""

import warnings
from typing import Any


def renamed(new: str, new_value: Any, old: str, old_value: Any, default: Any, owner: str) -> Any:
    """The value of the argument ``new``, accepting its former name ``old``.

    Args:
        new: the current name.
        new_value: its value (``None`` if not passed).
        old: the former name.
        old_value: its value (``None`` if not passed).
        default: the value when neither is passed.
        owner: the class or function, for the messages.

    Returns:
        ``new_value``, else ``old_value`` (warning), else ``default``.
    """
    if old_value is not None and new_value is not None:
        raise TypeError(f"{owner}: pass {new}= only ({old}= is its former name), not both.")
    if old_value is not None:
        warnings.warn(
            f"{owner}({old}=...) is deprecated; use {new}=..., the name used across "
            "kernels and ppl.",
            DeprecationWarning,
            stacklevel=3,
        )
        return old_value
    return default if new_value is None else new_value
