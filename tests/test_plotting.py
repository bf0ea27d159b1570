"""Plotly output for the book: plotly's own type plus an offline HTML fallback."""

import re
from importlib.metadata import entry_points

import plotly.graph_objects as go
import plotly.io as pio

from ondevice.plotting import PLOTLY_JS, BookRenderer, MystNbPlotly, figure_html, use_book_renderer

MIME = "application/vnd.plotly.v1+json"


def figure():
    return go.Figure(go.Bar(x=["a", "b"], y=[1, 2], name="</script><script>alert(1)</script>"))


def test_renderer_emits_plotly_type_and_offline_html():
    bundle = BookRenderer().to_mimebundle(figure().to_dict())
    assert set(bundle) == {MIME, "text/html"}
    assert bundle[MIME]["data"][0]["y"] == [1, 2]
    page = bundle["text/html"]
    assert PLOTLY_JS in page
    assert not re.search(r"https?://", page), "the fallback must not name any network location"


def test_script_content_cannot_close_the_script_tag():
    page = figure_html(figure().to_dict())
    body = page.split('<script type="text/javascript">', 1)[1]
    assert body.count("</script>") == 1  # only the loader's own closing tag
    assert "alert(1)" in body  # the name is still there, escaped


def test_figure_height_is_kept():
    fig = figure().update_layout(height=321)
    assert "height:321px" in figure_html(fig.to_dict())


def test_use_book_renderer_sets_the_default():
    previous = pio.renderers.default
    try:
        use_book_renderer()
        assert pio.renderers.default == "book"
        assert isinstance(pio.renderers["book"], BookRenderer)
    finally:
        pio.renderers.default = previous


class _Data:
    def __init__(self, mime_type, content):
        self.mime_type, self.content = mime_type, content


def test_myst_nb_plugin_renders_plotly_and_ignores_the_rest():
    content = BookRenderer().to_mimebundle(figure().to_dict())[MIME]
    (node,) = MystNbPlotly.handle_mime(None, _Data(MIME, content), inline=False)
    assert node["format"] == "html" and "book-plotly" in node.astext()
    assert MystNbPlotly.handle_mime(None, _Data("text/plain", "x"), inline=False) is None
    assert MystNbPlotly.handle_mime(None, _Data(MIME, content), inline=True) is None
    # chosen over text/html (priority 30) in HTML builds
    assert ("html", MIME, 25) in MystNbPlotly.mime_priority_overrides


def test_plugin_is_registered_for_myst_nb():
    names = {ep.name: ep.value for ep in entry_points(group="myst_nb.mime_renderers")}
    assert names.get("plotly") == "ondevice.plotting:MystNbPlotly"


def test_frames_survive_so_sliders_can_animate():
    fig = go.Figure(go.Bar(y=[1]), frames=[go.Frame(name="a", data=[go.Bar(y=[2])])])
    bundle = BookRenderer().to_mimebundle(fig.to_dict())
    assert bundle[MIME]["frames"][0]["name"] == "a"
    assert '"frames":[{' in bundle["text/html"].replace(" ", "")
