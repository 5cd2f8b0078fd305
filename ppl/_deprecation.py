"""Renamed keyword arguments (see :mod:`kernels._deprecation`)."""

from kernels._deprecation import renamed

__all__ = ["renamed"]
