"""kernels/ is the pure-JAX layer: importing every module of it loads nothing beyond what jax,
blackjax and numpy load themselves (no NumPyro, flax, ppl or lm_inference)."""

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import blackjax, jax, numpy
before = {n.split(".")[0] for n in sys.modules}
import kernels
for m in pkgutil.walk_packages(kernels.__path__, "kernels."):
    importlib.import_module(m.name)
print(",".join(sorted({n.split(".")[0] for n in sys.modules} - before - {"kernels"})))
"""


def test_kernels_import_only_jax_and_blackjax():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"kernels/ also imports {out.stdout.strip()}"
