"""posteriordb posteriors as NumPyro models with Stan's reference summaries (see :mod:`.models`)."""

from benchmarks.posteriordb.models import (
    ADAPT_DELTA,
    MODELS,
    NAMES,
    SHORT_NAMES,
    Agreement,
    Posterior,
    load,
    posteriordb_path,
)

__all__ = [
    "ADAPT_DELTA",
    "MODELS",
    "NAMES",
    "SHORT_NAMES",
    "Agreement",
    "Posterior",
    "load",
    "posteriordb_path",
]
