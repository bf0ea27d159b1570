"""Copy the JavaScript the static book needs into ``_build/extra/vendor/`` (README.md: the
book renders offline).

Sphinx copies ``_build/extra`` to the root of the HTML output (``html_extra_path``), so the
files land in ``_build/html/vendor/``, loaded only by the pages that need them. They must
not go under ``_static/``: Jupyter Book v1 injects every file there into every page.
Sources: the npm packages pinned in ``js/package-lock.json`` and plotly.js as shipped by the
installed plotly Python package (so figure JSON and plotly.js always match).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "js" / "node_modules"
OUT = ROOT / "_build" / "extra" / "vendor"

# (source under js/node_modules, destination under vendor/, file patterns to skip)
NPM = [
    ("mathjax/es5", "mathjax", ()),
    ("requirejs/require.js", "requirejs/require.js", ()),
    ("@jupyter-widgets/html-manager/dist", "html-manager", ("*.map", "embed.js", "embed.js.*")),
]

# Loaded between require.js and embed-amd.js (see _config.yml). The widget manager finds its own
# files (icon fonts) relative to the RequireJS URL of its module, so map that module to vendor/;
# and it typesets widget labels with MathJax 2's MathJax.Hub.Queue, which MathJax 3 replaced by
# typesetPromise. (MathJax is deferred: it exists by DOMContentLoaded, before widgets render.)
WIDGETS_CONFIG = """// Written by tools/vendor_js.py: widgets offline, with MathJax 3.
(function () {
  var vendor = new URL(".", document.currentScript.src).href;
  window.require.config({paths: {"@jupyter-widgets/html-manager/dist": vendor + "html-manager"}});
  window.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.startup) return;
    mj.Hub = {Queue: function (job) {
      mj.startup.promise.then(function () { return mj.typesetPromise([job[2]]); });
    }};
  });
})();
"""


def main() -> int:
    if not NODE.is_dir():
        print(f"error: {NODE} is missing; run 'npm ci' in js/ (make vendor does)", file=sys.stderr)
        return 1
    if OUT.exists():
        shutil.rmtree(OUT)
    for src, dst, skip in NPM:
        source, target = NODE / src, OUT / dst
        if not source.exists():
            print(f"error: {source} is missing; re-run 'npm ci' in js/", file=sys.stderr)
            return 1
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(*skip))
        else:
            shutil.copy2(source, target)
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    (OUT / "plotly").mkdir(parents=True)
    shutil.copy2(plotly_js, OUT / "plotly" / "plotly.min.js")
    (OUT / "widgets-config.js").write_text(WIDGETS_CONFIG)
    print(f"vendored JavaScript into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
