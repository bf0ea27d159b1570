"""Plotly figures that draw both in JupyterLab and in the static HTML book, offline.

Jupyter Book's builder has no renderer for plotly's own output type
(``application/vnd.plotly.v1+json``: "skipping unknown output mime type"). Two pieces fix that:

- :class:`MystNbPlotly`, a myst-nb mime-render plugin (registered in ``pyproject.toml``), turns
  that output type into :func:`figure_html` when the book is built, for every figure;
- the ``"book"`` renderer (:func:`use_book_renderer`, called by
  :func:`ondevice.notebook.setup`) makes notebooks emit that type (JupyterLab draws it natively)
  plus the same HTML as a fallback for front ends without plotly's extension, and never embeds
  the 4.6 MB plotly.js in a notebook.

:func:`figure_html` loads ``vendor/plotly/plotly.min.js`` from the built book's root (copied
there by ``tools/vendor_js.py``; no CDN).
"""

from __future__ import annotations

import html
import uuid

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

RENDERER = "book"
PLOTLY_JS = "vendor/plotly/plotly.min.js"  # relative to the root of the built HTML

_LOADER = """<div id="%(id)s" class="book-plotly" style="width:100%%;height:%(height)s"></div>
<script type="text/javascript">
(function () {
  var el = document.getElementById("%(id)s");
  var fig = %(fig)s;
  function draw(Plotly) { Plotly.newPlot(el, fig); }  // data, layout, config and frames
  function fail(why) { el.textContent = "This figure could not be drawn: " + why; }
  if (window.Plotly) { draw(window.Plotly); return; }
  var opts = document.querySelector('script[src*="_static/documentation_options.js"]');
  if (!opts) { fail("plotly.js is bundled only with the built book; run the notebook in JupyterLab."); return; }
  var url = new URL("../%(js)s", opts.src).href;
  if (!window.bookPlotly) {
    window.bookPlotly = new Promise(function (resolve, reject) {
      // plotly.js (v4) is a plain script that sets window.Plotly, also on RequireJS pages.
      var s = document.createElement("script");
      s.src = url;
      s.onload = function () { resolve(window.Plotly); };
      s.onerror = function () { reject(url + " did not load"); };
      document.head.appendChild(s);
    });
  }
  window.bookPlotly.then(draw, fail);
})();
</script>"""


def figure_html(figure: dict) -> str:
    """HTML that draws ``figure`` (a dict with ``data``, ``layout``, ``frames``, ``config``) offline."""
    # plotly's encoder writes "<" and "/" as \u escapes, so no string can close the <script>.
    fig_json = pio.json.to_json_plotly(figure)
    height = (figure.get("layout") or {}).get("height")
    return _LOADER % {
        "id": "plotly-" + uuid.uuid4().hex,
        "height": f"{int(height)}px" if height else "450px",
        "fig": fig_json,
        "js": html.escape(PLOTLY_JS),
    }


class BookRenderer(MimetypeRenderer):
    """Plotly renderer for the book: plotly's own output type plus an offline HTML fallback."""

    def to_mimebundle(self, fig_dict: dict) -> dict:
        figure = {
            "data": fig_dict.get("data", []),
            "layout": fig_dict.get("layout", {}),
            "frames": fig_dict.get("frames", []),  # slider steps animate between frames
            "config": {"responsive": True, "displaylogo": False},
        }
        figure = pio.json.from_json_plotly(pio.json.to_json_plotly(figure))  # plain JSON types
        return {"application/vnd.plotly.v1+json": figure, "text/html": figure_html(figure)}


def use_book_renderer() -> None:
    """Make plotly figures display through :class:`BookRenderer` in this kernel."""
    pio.renderers[RENDERER] = BookRenderer()
    pio.renderers.default = RENDERER


class MystNbPlotly:
    """myst-nb mime-render plugin: plotly's output type becomes :func:`figure_html` in HTML.

    Ranked above ``text/html`` (myst-nb: lower number wins; ``text/html`` is 30) so that the
    book draws every figure the same way, whichever renderer the notebook used.
    """

    MIME = "application/vnd.plotly.v1+json"
    mime_priority_overrides = [("html", MIME, 25), ("dirhtml", MIME, 25), ("singlehtml", MIME, 25)]

    @staticmethod
    def handle_mime(renderer, data, inline):
        if data.mime_type != MystNbPlotly.MIME or inline:
            return None  # a raw HTML node: non-HTML writers (LaTeX) drop it
        from docutils import nodes

        figure = dict(data.content)
        figure.setdefault("config", {"responsive": True, "displaylogo": False})
        return [nodes.raw(text=figure_html(figure), format="html", classes=["output", "text_html"])]
