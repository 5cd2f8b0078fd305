"""Weighted or unweighted particle draws as ``arviz.InferenceData``."""

from __future__ import annotations

import numpy as np

__all__ = ["to_arviz"]


def to_arviz(samples: dict):
    """Wrap a dict of ``(N, ...)`` draws as ``arviz.InferenceData`` (one chain of N draws)."""
    import arviz as az

    return az.from_dict(posterior={k: np.asarray(v)[None] for k, v in samples.items()})
