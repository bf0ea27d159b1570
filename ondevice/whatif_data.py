"""The numbers behind the in-browser what-if explorer (chapter 5), precomputed by the book build.

The static HTML book has no kernel, so ``tools/build_book.py`` asks the memory engine every
question the page can ask, ahead of time, and the page's JavaScript (``js/explorer/whatif.js``)
only does arithmetic on the answers. Per model, method, profile (``masked`` once per backward
mode) and resolution the data holds:

- the saved activations and the peak as functions of the batch, from the engine's
  :class:`~ondevice.memory.MemoryCurve` at every batch from 1 to ``MAX_BATCH``, stored as
  coefficients (:func:`encode`): ``f(b) = v[(b - 1) % p] + ((b - 1) // p) * d``. With ``p = 1``
  that is a line (intercept and slope); ``p = 4`` covers the ``masked`` profile's 1-bit masks,
  packed 32 per int32 word (``4 * ceil(numel * b / 32)`` bytes). The build checks every batch;
- parameters, their gradients and the optimizer state for every frozen-weight width and
  optimizer (they do not depend on the resolution or the batch);
- what each layer keeps for backward at batch 1 (the per-layer table of
  :func:`ondevice.memory.estimate`).

So each answer in the page is :func:`ondevice.whatif.answer` to the byte: the tests check the data
against it, the browser test checks the page against it. Also in the data: the device presets
(:data:`ondevice.devices.PRESETS`) and the measured training steps recorded by
``benchmarks/train_memory.py`` in ``benchmarks/results/train_memory-<device>.json``, if any.

Usage: ``python -m ondevice.whatif_data OUT.js [--jobs N]`` (what ``tools/build_book.py`` runs).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import html
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

from .devices import PRESETS
from .memory import FROZEN_BITS, OPTIMIZERS, PROFILES, estimate
from .memory.rules import MODES
from .whatif import (FALLBACK, MAX_BATCH, PARTS, RESOLUTIONS, Question, configured, curve_of,
                     methods_for)

VARIANTS = {"paper": ("paper", "exact"), "pytorch": ("pytorch", "exact"),
            "masked-exact": ("masked", "exact"), "masked-detached": ("masked", "detached")}
MEASURED_VARIANT = {"pytorch": "stock", "masked-exact": "exact", "masked-detached": "detached"}
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MEASURED_KEYS = ("network", "method", "resolution", "batch", "optimizer", "frozen_bits", "variant",
                 "measured_peak", "estimated_peak")
JS_NAME = "WHATIF_DATA"  # the global the data file sets: base64 of the gzipped JSON


def variant(q: Question) -> str:
    """The key of ``q``'s profile in the data: ``paper``, ``pytorch``, ``masked-exact`` or
    ``masked-detached``."""
    return f"masked-{q.backward}" if q.profile == "masked" else q.profile


def encode(values: list[int]) -> list[int]:
    """``[p, d, v_1 .. v_p]`` with ``values[b - 1] == v[(b - 1) % p] + ((b - 1) // p) * d`` for
    every batch ``b``: the smallest period ``p`` that fits all values (the whole list, ``d = 0``,
    if none shorter does)."""
    n = len(values)
    for p in (1, 2, 4, 8, 16, 32):
        if p < n and len({values[i + p] - values[i] for i in range(n - p)}) == 1:
            code = [p, values[p] - values[0], *values[:p]]
            assert [at(code, b) for b in range(1, n + 1)] == values
            return code
    return [n, 0, *values]


def at(code: list[int], batch: int) -> int:
    """The value at ``batch`` of a curve stored by :func:`encode`."""
    p, d = code[0], code[1]
    return code[2 + (batch - 1) % p] + ((batch - 1) // p) * d


def _group(model: str, method: str, var: str, resolutions, names: dict, types: dict):
    """Curves, parameter bytes and per-layer kept bytes of one (model, method, variant)."""
    profile, backward = VARIANTS[var]
    q = Question(model=model, method=method, profile=profile, backward=backward)
    curves, rows = {}, {}
    for r in resolutions:
        curve = curve_of(replace(q, resolution=r))
        reports = [curve.report(b) for b in range(1, MAX_BATCH + 1)]
        curves[str(r)] = [encode([x.saved_activations for x in reports]), encode([x.peak for x in reports])]
        layers = estimate(configured(model, method), (1, 3, r, r), profile=profile, backward=backward).layers
        rows[r] = {(names.setdefault(l.name, len(names)), types.setdefault(l.type, len(types))): l.saved
                   for l in layers if l.saved}  # in call order
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    layers = {"i": [k[0] for k in keys], "t": [k[1] for k in keys],
              "v": {str(r): [row.get(k, 0) for k in keys] for r, row in rows.items()}}
    params = {f"{bits}|{opt}": [c.params, c.param_grads, c.optimizer_state]
              for bits in FROZEN_BITS for opt in OPTIMIZERS
              for c in [curve_of(replace(q, resolution=resolutions[0], frozen_bits=bits, optimizer=opt))]}
    return curves, params, layers


def model_data(model: str, resolutions=RESOLUTIONS) -> dict:
    """Everything the page needs about one model (the build runs one process per model)."""
    names: dict[str, int] = {}
    types: dict[str, int] = {}
    out = {"methods": methods_for(model), "curves": {}, "params": {}, "layers": {}}
    for method in out["methods"]:
        for var in VARIANTS:
            curves, params, layers = _group(model, method, var, resolutions, names, types)
            out["curves"][f"{method}|{var}"] = curves
            out["params"][f"{method}|{var}"] = params
            out["layers"][f"{method}|{var}"] = layers
    out["names"], out["types"] = list(names), list(types)
    return out


def measured_rows(results: Path = RESULTS) -> dict:
    """The measured training steps in ``results/train_memory-*.json`` (device, file, row), the
    schema checked; ``rows`` is empty when none is recorded."""
    rows, files = [], []
    for path in sorted(results.glob("train_memory-*.json")):
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or "device" not in doc:
            raise ValueError(f"{path}: expected {{'device': str, 'rows': [...]}} (benchmarks/train_memory.py)")
        for i, row in enumerate(doc["rows"]):
            missing = [k for k in MEASURED_KEYS if k not in row]
            if missing:
                raise ValueError(f"{path}: row {i} lacks {', '.join(missing)}")
            rows.append({**{k: row[k] for k in MEASURED_KEYS}, "device": doc["device"], "file": path.name})
        files.append(path.name)
    return {"files": files, "rows": rows}


def explorer_data(models=None, resolutions=RESOLUTIONS, jobs: int = 1, progress: bool = True) -> dict:
    """The whole data set of the page (``models``: default every model of the zoo)."""
    from tqdm import tqdm

    from .models import ZOO

    models = list(ZOO if models is None else models)
    resolutions = tuple(resolutions)
    bar = tqdm(total=len(models), desc="what-if explorer data (models)", disable=not progress)
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {m: pool.submit(model_data, m, resolutions) for m in models}
            per_model = {}
            for m, f in futures.items():
                per_model[m] = f.result()
                bar.update()
    else:
        per_model = {}
        for m in models:
            per_model[m] = model_data(m, resolutions)
            bar.update()
    bar.close()
    import torch

    return {
        "schema": 1, "torch": torch.__version__, "max_batch": MAX_BATCH, "resolutions": list(resolutions),
        "frozen_bits": list(FROZEN_BITS), "optimizers": list(OPTIMIZERS), "profiles": list(PROFILES),
        "backwards": list(MODES), "parts": [[k, v] for k, v in PARTS.items()], "fallback": FALLBACK,
        "defaults": asdict(Question()), "measured_variant": MEASURED_VARIANT,
        "devices": [{"name": d.name, "ram": d.ram, "ram_source": d.ram_source, "budget": d.budget,
                     "deductions": [asdict(x) for x in d.deductions]} for d in PRESETS.values()],
        "models": per_model, "measured": measured_rows(),
    }


def to_js(data: dict) -> str:
    """The data as a script that sets ``window.WHATIF_DATA`` (base64 of the gzipped JSON: the
    per-layer tables compress tenfold, and a page on file:// cannot fetch a JSON file)."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    packed = base64.b64encode(gzip.compress(raw, mtime=0)).decode()
    return f"// Written by python -m ondevice.whatif_data: the what-if explorer's numbers.\nwindow.{JS_NAME} = \"{packed}\";\n"


def from_js(text: str) -> dict:
    """The data back from :func:`to_js`'s script."""
    packed = text.split(f"window.{JS_NAME} = \"", 1)[1].rsplit('"', 1)[0]
    return json.loads(gzip.decompress(base64.b64decode(packed)))


_PAGE = """<div class="whatif-explorer" data-question="%(question)s">%(fallback)s</div>
<script type="text/javascript">
(function () {
  var el = document.currentScript.previousElementSibling;
  var opts = document.querySelector('script[src*="_static/documentation_options.js"]');
  if (!opts) return;  // not the built book: the text in the box says what to do
  var root = new URL("../", opts.src).href;
  function fail(why) { el.textContent = "The explorer could not start: " + why; }
  if (!window.whatifScript) {
    window.whatifScript = new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = root + "explorer/whatif.js";
      s.onload = resolve;
      s.onerror = function () { reject("explorer/whatif.js did not load"); };
      document.head.appendChild(s);
    });
  }
  window.whatifScript.then(function () { return window.WhatIf.mount(el, root); }).catch(fail);
})();
</script>"""


class Page:
    """The in-browser explorer as a notebook output, starting at ``question``: a box the page's
    script fills (``explorer/whatif.js`` and its data, copied into the built book by
    ``tools/build_book.py``)."""

    def __init__(self, question: Question = Question()):
        self.question = question

    def _repr_html_(self) -> str:
        fallback = ("The in-browser explorer runs in the built HTML book. In JupyterLab, "
                    "<code>ondevice.whatif.explorer()</code> is the live widget.")
        return _PAGE % {"question": html.escape(json.dumps(asdict(self.question))), "fallback": fallback}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the script to write (e.g. _build/extra/explorer/whatif-data.js)")
    parser.add_argument("--jobs", type=int, default=2, help="processes, one model each (default 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    text = to_js(explorer_data(jobs=args.jobs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
