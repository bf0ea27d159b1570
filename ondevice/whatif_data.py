"""The numbers behind the in-browser what-if explorer (chapter 5), precomputed by the book build.

The static HTML book has no kernel, so ``tools/build_book.py`` asks the memory engine every
question the page can ask, ahead of time, and the page's JavaScript (``js/explorer/whatif.js``)
only does arithmetic on the answers. Per model, method, profile (``masked`` once per backward
mode) and resolution the data holds:

- for each optimizer, every part of the total (:meth:`ondevice.whatif.Answer.breakdown`: what is
  alive at the step's peak) but the parameters, as a function of the batch, from the engine's
  :class:`~ondevice.memory.MemoryCurve` at every batch from 1 to ``MAX_BATCH``, stored as
  coefficients (:func:`encode`): runs of batches on which ``f(b) = v[k % p] + (k // p) * d``
  (``k`` counted from the run's first batch). With ``p = 1`` a run is a line (intercept and
  slope); ``p = 4`` covers the 1-bit masks packed 32 per int32 word (``4 * ceil(numel * b / 32)``
  bytes); a new run starts where the peak moves to another moment of the step;
- the parameters for each frozen-weight width of :data:`WIDTHS`; a width that changes more than
  the parameters (int8 weights dequantized into a temporary, say) gets curves of its own (the
  build compares it with full width at every batch);
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
from .memory import OPTIMIZERS, PROFILES, estimate
from .memory.rules import MODES
from .whatif import (FALLBACK, MAX_BATCH, PARTS, RESOLUTIONS, Answer, Question, configured, curve_of,
                     methods_for, resolutions_for)

VARIANTS = {"paper": ("paper", "exact"), "pytorch": ("pytorch", "exact"),
            "masked-exact": ("masked", "exact"), "masked-detached": ("masked", "detached")}
MEASURED_VARIANT = {"pytorch": "stock", "masked-exact": "exact", "masked-detached": "detached"}
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MEASURED_KEYS = ("network", "method", "resolution", "batch", "optimizer", "frozen_bits", "variant",
                 "measured_peak", "estimated_peak")
JS_NAME = "WHATIF_DATA"  # the global the data file sets: base64 of the gzipped JSON
PERIODS = (1, 2, 4, 8, 16, 32)
# Frozen weights as kernelize stores them (32-bit or int8); the live widget also asks 16 and 4.
WIDTHS = (32, 8)
# The networks of chapters 1-3 (TinyTL's and MobileTL's backbones). The live widget offers the
# whole zoo; precomputing every model for the static page would take the build (two cores) about
# twice as long as these five do.
EXPLORER_MODELS = ("proxylessnas_mobile", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet50")


def variant(q: Question) -> str:
    """The key of ``q``'s profile in the data: ``paper``, ``pytorch``, ``masked-exact`` or
    ``masked-detached``."""
    return f"masked-{q.backward}" if q.profile == "masked" else q.profile


def encode(values: list[int]) -> list[list[int]]:
    """Runs ``[start, p, d, v_0 .. v_(p-1)]`` such that ``values[start + k] == v[k % p] + (k // p) * d``
    up to the next run's start (batches counted from 0). Greedy: at each start the run of one of
    :data:`PERIODS` that covers the most values beyond the ``p`` it stores (the shorter period on
    a tie); near a bend of the curve that is a short line."""
    runs, i, n = [], 0, len(values)
    while i < n:
        best = (1, 1, 0)  # (length, p, d): one value
        for p in PERIODS:
            if i + p >= n:
                break
            d, j = values[i + p] - values[i], i
            while j + p < n and values[j + p] - values[j] == d:
                j += 1
            if j + p - i - p > best[0] - best[1]:
                best = (j + p - i, p, d)
        length, p, d = best
        runs.append([i, p, d, *values[i:i + p]])
        i += length
    assert [at(runs, b) for b in range(1, n + 1)] == values
    return runs


def at(runs: list[list[int]], batch: int) -> int:
    """The value at ``batch`` (from 1) of a curve stored by :func:`encode`."""
    run = next(r for r in reversed(runs) if r[0] <= batch - 1)
    k, p = batch - 1 - run[0], run[1]
    return run[3 + k % p] + (k // p) * run[2]


def _curves(q: Question, resolution: int) -> tuple[dict, dict]:
    """Each part but the parameters as encoded curves, per optimizer at full width (key ``opt``)
    and per optimizer and frozen-weight width where the width changes more than the parameters
    (key ``opt|bits``: compared at every batch); the parameters per width."""
    here, curves, params = replace(q, resolution=resolution), {}, {}
    for opt in OPTIMIZERS:
        full = None  # the parts at every batch at full width
        for bits in WIDTHS:
            curve = curve_of(replace(here, frozen_bits=bits, optimizer=opt))
            every = [Answer(here, curve.report(b)).breakdown() for b in range(1, MAX_BATCH + 1)]
            width = params.setdefault(str(bits), every[0]["params"])
            if any(p["params"] != width for p in every):
                raise ValueError(f"{replace(here, frozen_bits=bits, optimizer=opt)}: the parameters change with "
                                 "the batch or the optimizer; ondevice/whatif_data.py stores them per width only")
            if full is not None and all(p == {**f, "params": width} for p, f in zip(every, full)):
                continue  # this width changes the parameters only
            codes = {k: encode([p[k] for p in every]) for k in PARTS if k != "params"}
            curves[opt if full is None else f"{opt}|{bits}"] = codes
            full = every if full is None else full
    return curves, params


def _group(model: str, method: str, var: str, resolutions, names: dict, types: dict):
    """Curves, parameter bytes and per-layer kept bytes of one (model, method, variant)."""
    profile, backward = VARIANTS[var]
    q = Question(model=model, method=method, profile=profile, backward=backward)
    curves, rows, params = {}, {}, None
    for r in resolutions:
        curves[str(r)], here = _curves(q, r)
        if params not in (None, here):
            raise ValueError(f"{model}, {method}, {var}: the parameters change with the resolution ({params} vs {here})")
        params = here
        layers = estimate(configured(model, method), (1, 3, r, r), profile=profile, backward=backward).layers
        rows[r] = {(names.setdefault(l.name, len(names)), types.setdefault(l.type, len(types))): l.saved
                   for l in layers if l.saved}  # in call order
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    layers = {"i": [k[0] for k in keys], "t": [k[1] for k in keys],
              "v": {str(r): [row.get(k, 0) for k in keys] for r, row in rows.items()}}
    return curves, params, layers


def model_data(model: str, resolutions=RESOLUTIONS) -> dict:
    """Everything the page needs about one model (the build runs one process per model)."""
    names: dict[str, int] = {}
    types: dict[str, int] = {}
    resolutions = tuple(r for r in resolutions if r in resolutions_for(model))
    out = {"methods": methods_for(model), "resolutions": list(resolutions), "curves": {}, "params": {}, "layers": {}}
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
    """The whole data set of the page (``models``: default :data:`EXPLORER_MODELS`)."""
    from tqdm import tqdm

    from .models import ZOO

    models = list(EXPLORER_MODELS if models is None else models)
    unknown = [m for m in models if m not in ZOO]
    if unknown:
        raise ValueError(f"models must be in the zoo ({', '.join(ZOO)}), got {', '.join(unknown)}")
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
        "frozen_bits": list(WIDTHS), "optimizers": list(OPTIMIZERS), "profiles": list(PROFILES),
        "backwards": list(MODES), "parts": [[k, v] for k, v in PARTS.items()], "fallback": FALLBACK,
        "defaults": asdict(Question()), "measured_variant": MEASURED_VARIANT,
        "devices": [{"name": d.name, "ram": d.ram, "ram_source": d.ram_source, "budget": d.budget,
                     "deductions": [asdict(x) for x in d.deductions]} for d in PRESETS.values()],
        "model_order": models, "models": per_model, "measured": measured_rows(),
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
        if question.model not in EXPLORER_MODELS or question.frozen_bits not in WIDTHS:
            raise ValueError(f"the in-browser explorer asks about the models {', '.join(EXPLORER_MODELS)} and "
                             f"frozen weights of {WIDTHS} bits, got {question.model!r}, {question.frozen_bits!r}")
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
