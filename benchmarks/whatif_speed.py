"""How fast does the what-if explorer update? (chapter 5; target <= 50 ms per update)

Two explorers, one target:

- the live widget (``ondevice.whatif_widgets.Explorer``): after the first visit to a model (which
  traces every method at every resolution), one update per control change, the numbers alone
  (verdict and the per-method limits table) and the whole update including the plotly figure,
  with the garbage collector off during each timed call, as ``timeit`` does;
- with ``--browser``, the static book's explorer (``js/explorer/whatif.js``) in headless Chromium
  from the built book (``make book``): random control changes, each timed by the page itself
  (its ``data-render-ms``: answer, table and the charts that changed).

Writes ``benchmarks/results/whatif_speed-<host>.json``.

Usage: ``python benchmarks/whatif_speed.py [--repeats N] [--browser] [--changes N] [--page HTML]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

from common import host, machine, stats, timed, today
from tqdm import tqdm

from ondevice.whatif import RESOLUTIONS, Question, answer, limits
from ondevice.whatif_widgets import Explorer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "_build" / "html" / "book" / "05_together" / "01_what_fits_where.html"
TARGET_MS = 50.0
CHANGE = """([testid, value, event]) => {
  const box = document.querySelector(".whatif-explorer"), el = box.querySelector(`[data-testid="${testid}"]`);
  el.value = String(value);
  el.dispatchEvent(new Event(event, {bubbles: true}));
  return Number(box.getAttribute("data-render-ms"));
}"""


def widget(repeats: int) -> dict:
    q = Question()
    start = time.perf_counter()
    limits(q)  # the first visit: every method at every resolution
    first_visit = time.perf_counter() - start
    ex = Explorer(q)
    numbers, full = [], []
    for _ in tqdm(range(repeats), desc="widget passes"):
        for res in RESOLUTIONS:
            for batch in (1, 4, 8, 16, 64):
                for budget in (16e6, 64e6, 512e6):
                    qq = replace(q, resolution=res, batch=batch, budget=budget)
                    numbers.append(timed(lambda: (answer(qq), limits(qq))))
        for res in RESOLUTIONS:
            full.append(timed(lambda: setattr(ex.controls["resolution"], "value", res)))
        for batch in range(1, 40, 3):
            full.append(timed(lambda: setattr(ex.controls["batch"], "value", batch)))
    return {"what": "ondevice.whatif_widgets.Explorer, ProxylessNAS-Mobile (TinyTL network), after the first visit",
            "gc": "disabled during each timed call, as timeit does", "first_visit_s": first_visit,
            "numbers_ms": stats(numbers), "full_update_with_figure_ms": stats(full)}


def browser(changes: int, page_path: Path) -> dict:
    from playwright.sync_api import sync_playwright

    if not page_path.exists():
        raise SystemExit(f"{page_path} is missing: build the book first (make book)")
    from ondevice.devices import PRESETS
    from ondevice.whatif_data import EXPLORER_MODELS, WIDTHS

    rng = random.Random(0)
    controls = [("model", EXPLORER_MODELS, "change"), ("resolution", RESOLUTIONS, "input"), ("batch", range(1, 129), "input"),
                ("frozen-bits", WIDTHS, "change"), ("optimizer", ("sgd", "momentum", "adam"), "change"),
                ("profile", ("paper", "pytorch", "masked"), "change"), ("backward", ("exact", "detached"), "change"),
                ("device", list(PRESETS), "change"), ("budget-mb", (16, 64, 256, 1024), "input")]
    times: dict[str, list[float]] = {name: [] for name, _, _ in controls}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                              args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1280, "height": 2400})
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.wait_for_selector('.whatif-explorer[data-ready="1"]', timeout=60_000)
        version = b.version
        for _ in tqdm(range(changes), desc="browser changes"):
            name, values, event = rng.choice(controls)
            times[name].append(page.evaluate(CHANGE, [name, rng.choice(list(values)), event]))
        b.close()
    every = [t for ts in times.values() for t in ts]
    return {"what": "js/explorer/whatif.js in the built book, random control changes, each timed by the page",
            "chromium": version, "update_ms": stats(every),
            "by_control_ms": {k: stats(v) for k, v in times.items() if v}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--browser", action="store_true", help="also time the static book's explorer in Chromium")
    parser.add_argument("--changes", type=int, default=300, help="control changes in the browser (default 300)")
    parser.add_argument("--page", type=Path, default=PAGE, help="the built what-fits-where page (default: _build/html's)")
    args = parser.parse_args()
    summary = {"target_ms": TARGET_MS, **widget(args.repeats)}
    if args.browser:
        summary["browser"] = browser(args.changes, args.page)
    summary.update(machine=machine(), load_average_1min=os.getloadavg()[0], date=today())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"whatif_speed-{host()}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    p95 = summary["full_update_with_figure_ms"]["p95"]
    print(f"widget full update p95 {p95:.1f} ms: {'meets' if p95 <= TARGET_MS else 'MISSES'} the {TARGET_MS:.0f} ms target")
    if args.browser:
        p95 = summary["browser"]["update_ms"]["p95"]
        print(f"browser update p95 {p95:.1f} ms: {'meets' if p95 <= TARGET_MS else 'MISSES'} the {TARGET_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
