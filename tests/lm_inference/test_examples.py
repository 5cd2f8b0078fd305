"""The programmable-target examples run end to end in quick mode (their own asserts check the
outputs: every regex / JSON sample matches, short words hold, beta = 0 gives log Z = 0)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = ["constrained_generation", "short_words", "prompt_intersection", "infilling"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_quick(name):
    path = Path(__file__).parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--quick"])
