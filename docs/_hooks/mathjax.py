"""MkDocs hook: serve a local copy of MathJax 3 with the site, so the math renders offline.

The script comes from the ``django-static-mathjax`` wheel (MathJax 3.2.2, Apache-2.0, no
dependencies), installed with the docs tooling; its TeX-to-CommonHTML bundle, fonts and TeX
extensions are added to the site under ``assets/mathjax/``, which ``mkdocs.yml`` loads with
``extra_javascript``. ``pymdownx.arithmatex`` (generic) writes the formulas as ``\\(...\\)`` and
``\\[...\\]`` inside ``.arithmatex`` elements; ``docs/javascripts/mathjax.js`` configures
MathJax to typeset exactly those.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SITE_DIR = "assets/mathjax"
PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y")


def mathjax_root() -> Path:
    """The ``es5`` folder of the installed MathJax copy (raises with the fix if missing)."""
    spec = importlib.util.find_spec("mathjax")
    root = None
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if root is None or not (root / "tex-chtml.js").is_file():
        raise RuntimeError(
            "MathJax is not installed: the docs render their math with a local copy. Install "
            "the docs tooling (pip install 'django-static-mathjax==3.2.2.1')."
        )
    return root


def mathjax_files() -> list[tuple[str, Path]]:
    """``(site path, source file)`` for every MathJax file the site serves."""
    root = mathjax_root()
    out = []
    for part in PARTS:
        path = root / part
        paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out += [(f"{SITE_DIR}/{p.relative_to(root).as_posix()}", p) for p in paths]
    return out


def on_files(files, config):
    from mkdocs.structure.files import File

    for uri, path in mathjax_files():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
