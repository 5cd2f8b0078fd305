// MathJax 3 configuration for pymdownx.arithmatex (generic mode); the script itself is the local
// copy under assets/mathjax/ (docs/_hooks/mathjax.py), so the site renders offline.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// mkdocs-material's instant navigation swaps the page without reloading the scripts: typeset
// each new page. Skip the first emission (the initial page, which MathJax typesets at startup):
// clearing the output cache there would drop the CSS of the glyphs already drawn (blank math).
if (typeof document$ !== "undefined") {
  let initial = true;
  document$.subscribe(() => {
    if (initial) {
      initial = false;
      return;
    }
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
