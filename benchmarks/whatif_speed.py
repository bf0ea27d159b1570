"""How fast does the live what-if explorer update? (chapter 5; target <= 50 ms per update)

After the first visit to a model (which traces every method at every resolution), times one
update of ``ondevice.whatif.Explorer`` per control change: the numbers alone (verdict and the
per-method limits table) and the whole update including the plotly figure. The garbage collector
is off during each timed call, as ``timeit`` does. Writes
``benchmarks/results/whatif_speed-<host>.json``.

Usage: ``python benchmarks/whatif_speed.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from common import host, machine, stats, timed, today
from tqdm import tqdm

from ondevice.whatif import RESOLUTIONS, Explorer, Question, answer, limits

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    q = Question()
    start = time.perf_counter()
    limits(q)  # the first visit: every method at every resolution
    first_visit = time.perf_counter() - start
    ex = Explorer(q)
    numbers, full = [], []
    for _ in tqdm(range(args.repeats), desc="passes"):
        for res in RESOLUTIONS:
            for batch in (1, 4, 8, 16, 64):
                for budget in (16e6, 64e6, 512e6):
                    qq = replace(q, resolution=res, batch=batch, budget=budget)
                    numbers.append(timed(lambda: (answer(qq), limits(qq))))
        for res in RESOLUTIONS:
            full.append(timed(lambda: setattr(ex.controls["resolution"], "value", res)))
        for batch in range(1, 40, 3):
            full.append(timed(lambda: setattr(ex.controls["batch"], "value", batch)))
    summary = {
        "what": "ondevice.whatif updates, ProxylessNAS-Mobile (TinyTL network), after the first visit",
        "target_ms": TARGET_MS, "gc": "disabled during each timed call, as timeit does",
        "first_visit_s": first_visit,
        "numbers_ms": stats(numbers), "full_update_with_figure_ms": stats(full),
        "machine": machine(),
        "date": today(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"whatif_speed-{host()}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    p95 = summary["full_update_with_figure_ms"]["p95"]
    print(f"full update p95 {p95:.1f} ms: {'meets' if p95 <= TARGET_MS else 'MISSES'} the {TARGET_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
