"""The built book in headless Chromium, from file://, with the network out of reach.

Needs the built book (``make book``; ``make test`` builds it first) and Debian's chromium
(``make test`` installs it when missing). Saves screenshots under ``_build/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
PRIMER = HTML / "book" / "00_primer" / "measuring_memory.html"
SHOTS = ROOT / "_build" / "screenshots"
URL = re.compile(r"https?://", re.I)
LOCAL = ("file:", "data:", "blob:", "about:")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def built_pages() -> list[Path]:
    if not (HTML / "index.html").exists():
        pytest.fail("the book is not built: run `make book` (or `make test`, which builds it)")
    return sorted(HTML.rglob("*.html"))


class _ScriptAndLinkURLs(HTMLParser):
    """Collects http(s) URLs in <script> (src or inline code) and <link> tags."""

    def __init__(self):
        super().__init__()
        self.found, self._in_script = [], False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "link"):
            self.found += [f"<{tag} {k}={v}>" for k, v in attrs if v and URL.search(v)]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data):
        if self._in_script and URL.search(data):
            self.found.append("<script> code: " + data.strip()[:120])


def test_no_page_names_a_network_script_or_stylesheet():
    offenders = {}
    for page in built_pages():
        parser = _ScriptAndLinkURLs()
        parser.feed(page.read_text(encoding="utf-8"))
        if parser.found:
            offenders[str(page.relative_to(HTML))] = parser.found
    assert not offenders, offenders


@pytest.fixture(scope="module")
def browser():
    built_pages()
    executable = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.fail("chromium is missing: `make test` installs Debian's chromium (or set CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, path: Path, height=1800):
    """Open ``path``; return the page and lists that fill with remote requests and page errors."""
    page = browser.new_page(viewport={"width": 1280, "height": height})
    remote, errors = [], []
    page.on("request", lambda r: None if r.url.startswith(LOCAL) else remote.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url}: {r.failure}"))
    page.goto(path.as_uri(), wait_until="load")
    return page, remote, errors


def test_primer_page_draws_math_figure_and_widget_offline(browser):
    page, remote, errors = open_page(browser, PRIMER)
    # Math: MathJax 3 finished, and every math element holds typeset output.
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.evaluate("() => MathJax.startup.promise")
    math = page.eval_on_selector_all(".math", "els => els.map(e => !!e.querySelector('mjx-container'))")
    assert math and all(math), f"{math.count(False)} of {len(math)} math elements not typeset"
    # Figure: plotly.js drew an SVG with traces.
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    traces = page.eval_on_selector_all(".js-plotly-plot .scatterlayer .trace", "els => els.length")
    assert traces >= 1
    # Widget: the slider is rendered from the saved widget state, with its saved value.
    page.wait_for_selector(".widget-slider", timeout=30_000)
    readout = page.inner_text(".widget-slider .widget-readout")
    assert readout.strip() == "8"
    assert "saved for backward" in page.inner_text(".widget-html-content")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "primer.png"), full_page=True)
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "primer-figure.png"))
    assert not remote, f"requests left the machine: {remote}"
    assert not errors, errors


@pytest.mark.parametrize("name", ["index.html", "book/intro.html", "book/notation.html",
                                  "book/01_memory/index.html", "search.html"])
def test_other_pages_open_without_errors_or_network(browser, name):
    page, remote, errors = open_page(browser, HTML / name, height=900)
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)  # let deferred scripts (MathJax) run
    assert "Tiny Transfer Learning" in page.title() or page.url.endswith("intro.html")
    assert not remote, f"requests left the machine: {remote}"
    assert not errors, errors


def test_static_what_if_explorer_has_a_slider_and_draws(browser):
    page, remote, errors = open_page(browser, HTML / "book" / "05_together" / "01_what_fits_where.html",
                                     height=2400)
    page.wait_for_selector(".slider-container", timeout=30_000)  # plotly drew the slider
    figure = page.locator(".js-plotly-plot", has=page.locator(".slider-container")).first
    bars = figure.locator(".barlayer .point")
    assert bars.count() >= 6  # one bar per method for the visible batch size
    def shown():
        return figure.evaluate("gd => gd.data.filter(t => t.visible !== false).map(t => Array.from(t.y))")

    before = shown()
    rail = figure.locator(".slider-rail-touch-rect").first  # drag to the last step, as a reader would
    box = rail.bounding_box()
    rail.click(position={"x": box["width"] - 3, "y": box["height"] / 2})
    page.wait_for_function("el => el.textContent.includes('512')",
                           arg=figure.locator(".slider-container text").first.element_handle())
    page.wait_for_timeout(300)
    assert shown() != before  # the frames hold the other resolutions' numbers
    figure.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "what-fits-where.png"))
    assert not remote, f"requests left the machine: {remote}"
    assert not errors, errors


def chapter_pages() -> list[str]:
    """Every built chapter and lab page (relative to the HTML root), for the figure check."""
    pages = [p for d in ("book", "labs") for p in sorted((HTML / d).rglob("*.html"))] if HTML.exists() else []
    return [str(p.relative_to(HTML)) for p in pages]


@pytest.mark.parametrize("name", chapter_pages())
def test_every_figure_of_every_page_draws_offline(browser, name):
    page, remote, errors = open_page(browser, HTML / name, height=900)
    page.wait_for_load_state("load")
    figures = page.locator(".book-plotly").count()
    if figures:  # each figure's loader replaced its placeholder with plotly's SVG
        page.wait_for_function(
            "n => document.querySelectorAll('.book-plotly .main-svg').length >= n", arg=figures, timeout=60_000)
    text = page.inner_text("body")
    page.close()
    assert "could not be drawn" not in text
    assert not remote, f"requests left the machine: {remote}"
    assert not errors, errors
