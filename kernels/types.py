"""Array and pytree aliases shared by every module (after ``blackjax/types.py``)."""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike | np.ndarray
ArrayTree = Any  # a pytree whose leaves are arrays
ArrayLikeTree = Any
PRNGKey = jax.Array
LogDensityFn = Callable[[ArrayLikeTree], Array]

__all__ = ["Array", "ArrayLike", "ArrayTree", "ArrayLikeTree", "PRNGKey", "LogDensityFn"]
