"""How fast is ``ondevice.memory.estimate`` when a reader drags a slider? (chapter 1, 5)

Times an estimate of TinyTL's ProxylessNAS-Mobile (lite residuals, GroupNorm + WS, TinyTL-L+B)
at a resolution or batch size it has not seen, after a first call. Target: p95 <= 50 ms.
As ``timeit`` does, the garbage collector is off during each timed call: ``estimate`` creates no
reference cycles (``tests/test_memory_estimate.py`` checks it), so a collection during a call
would only be the interpreter sweeping the rest of its heap. Writes
``benchmarks/results/estimate_speed-<host>.json`` with the machine and versions.

Usage: ``python benchmarks/estimate_speed.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import host, machine, stats, timed, today
from tqdm import tqdm

from ondevice import methods
from ondevice.lite_residual import add_lite_residuals
from ondevice.memory import estimate
from ondevice.models import proxylessnas_mobile, to_groupnorm

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes over the grid (default 3)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    model = methods.apply(to_groupnorm(add_lite_residuals(proxylessnas_mobile(num_classes=102))),
                          "tinytl_lb")
    estimate(model, (8, 3, 224, 224))  # the first call
    new_resolution, new_batch = [], []
    for _ in tqdm(range(args.repeats), desc="passes"):
        for res in range(96, 513, 32):
            estimate.__globals__["_TRACES"].clear()  # every resolution is new to the cache
            new_resolution.append(timed(lambda: estimate(model, (8, 3, res, res))))
            for batch in (1, 2, 4, 16, 32, 64, 128):
                new_batch.append(timed(lambda: estimate(model, (batch, 3, res, res))))
    summary = {
        "what": "estimate() of TinyTL-L+B ProxylessNAS-Mobile after a first call",
        "target_ms": TARGET_MS,
        "gc": "disabled during each timed call, as timeit does",
        "new_resolution_ms": stats(new_resolution),
        "new_batch_ms": stats(new_batch),
        "samples": {"new_resolution": len(new_resolution), "new_batch": len(new_batch)},
        "machine": machine(),
        "date": today(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"estimate_speed-{host()}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    p95 = max(summary["new_resolution_ms"]["p95"], summary["new_batch_ms"]["p95"])
    print(f"p95 {p95:.1f} ms: {'meets' if p95 <= TARGET_MS else 'MISSES'} the {TARGET_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
