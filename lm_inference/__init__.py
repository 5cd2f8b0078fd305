"""Hugging Face causal language models in JAX, and twisted SMC over their tokens.

Public names are imported on first use, so ``import lm_inference`` stays cheap.
"""

import importlib
from pathlib import Path

DEFAULT_MODEL_PATH = Path(__file__).parent / "default_model"

# public name -> module that defines it
_EXPORTS = {
    "load": "lm_inference.loading",
    "CausalLM": "lm_inference.loading",
    "SUPPORTED_ARCHITECTURES": "lm_inference.loading",
    "sample": "lm_inference.sampling",
    "sequence_logprob": "lm_inference.sampling",
    "SampleOutput": "lm_inference.sampling",
    "CheckpointError": "lm_inference.loading",
    "UnsupportedArchitectureError": "lm_inference.loading",
    "DecodeOutput": "lm_inference.base",
    "reorder_cache": "lm_inference.base",
    "broadcast_cache": "lm_inference.base",
    "Target": "lm_inference.target",
    "smc": "lm_inference.twisted_smc",
    "smc_runs": "lm_inference.twisted_smc",
    "teacher_force": "lm_inference.twisted_smc",
    "SMCResult": "lm_inference.twisted_smc",
    "train_twist": "lm_inference.twist_training",
    "bidirectional_bounds": "lm_inference.bounds",
    "potentials": "lm_inference.potentials",
    "bounds": "lm_inference.bounds",
    "twists": "lm_inference.twists",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return module if module.__name__ == f"lm_inference.{name}" else getattr(module, name)
    raise AttributeError(f"module 'lm_inference' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = ["DEFAULT_MODEL_PATH", *_EXPORTS]
