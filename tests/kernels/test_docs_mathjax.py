"""The docs render their math offline: a local MathJax copy is served with the site.

pymdownx.arithmatex (generic) only marks the formulas; without a MathJax (or KaTeX) script
every formula shows as its LaTeX source. The fast test checks the wiring (mkdocs.yml, the hook,
the installed files); the slow one builds the site and checks that every page with math loads a
script that exists in the built site, next to its fonts.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _hook():
    path = ROOT / "docs" / "_hooks" / "mathjax.py"
    spec = importlib.util.spec_from_file_location("docs_mathjax_hook", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _config():
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *a: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_mkdocs_wires_a_local_mathjax():
    pytest.importorskip("mathjax", reason="docs tooling (django-static-mathjax) not installed")
    cfg = _config()
    assert "docs/_hooks/mathjax.py" in cfg["hooks"]
    assert "assets/mathjax/tex-chtml.js" in cfg["extra_javascript"]
    assert "javascripts/mathjax.js" in cfg["extra_javascript"]
    assert cfg["extra_javascript"].index("javascripts/mathjax.js") < cfg["extra_javascript"].index(
        "assets/mathjax/tex-chtml.js"
    )  # configuration before the script
    files = dict(_hook().mathjax_files())
    assert files["assets/mathjax/tex-chtml.js"].stat().st_size > 500_000
    fonts = [u for u in files if u.startswith("assets/mathjax/output/chtml/fonts/woff-v2/")]
    assert len(fonts) > 10
    assert "https://" not in (ROOT / "docs" / "javascripts" / "mathjax.js").read_text()


@pytest.mark.slow
def test_built_site_loads_mathjax(tmp_path):
    pytest.importorskip("mathjax", reason="docs tooling (django-static-mathjax) not installed")
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    pages = [p for p in site.rglob("*.html") if 'class="arithmatex"' in p.read_text()]
    assert len(pages) >= 5, pages
    for page in pages:
        html = page.read_text()
        srcs = re.findall(r'<script src="([^"]*tex-chtml\.js)"', html)
        assert srcs, page
        assert (page.parent / srcs[0]).resolve().is_file(), (page, srcs[0])
        assert re.search(r'<script src="[^"]*javascripts/mathjax\.js"', html), page
        assert "cdn.jsdelivr" not in html and "polyfill.io" not in html
    assert (site / "assets/mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()
