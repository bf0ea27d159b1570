"""The real peak memory of a training step against the estimate, every method, stock and
kernelized (chapter 5, "Theory meets the allocator").

For each configuration it starts a fresh Python process (allocator caches and lazily created
optimizer state would otherwise carry over from one configuration to the next), builds the model,
applies the method, kernelizes it if asked, and runs ``ondevice.memory.measure_step`` (two warm-up
steps, then the measured one: Adam, cross-entropy). It records the measured peak and its
breakdown, the estimate (``estimate(...).total``, the step model) and its breakdown, where each
peak falls, and the median time of a training step (three more, without the counting allocator).
For the chapter's figure two configurations also record both timelines.

Configurations: ProxylessNAS-Mobile (FT-Full, FT-Last, TinyTL-B, TinyTL-L+B) and MobileNetV2
(MobileTL K=5, FT-Full), set up as the what-if explorer sets them up (TinyTL's network: GroupNorm,
weight standardization, lite residual branches; MobileTL: the stock BatchNorm network), 102 classes, at 224 and 320 px and batch 8 and 1; stock, and kernelized in both
modes with 32-bit and 8-bit frozen weights. Writes ``benchmarks/results/train_memory-<device>.json``.

Usage: ``python benchmarks/train_memory.py [--device cpu|cuda] [--quick] [--out DIR]``
(``--quick``: 64 px, batch 2, three configurations: the code path in a minute, for CI).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import command, driver_version, host, machine, today
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 102  # ondevice.whatif.NUM_CLASSES, TinyTL's Table 2
NETWORKS = {"proxylessnas_mobile": ("ft_full", "ft_last", "tinytl_b", "tinytl_lb"), "mobilenet_v2": ("mobiletl", "ft_full")}
VARIANTS = (("stock", 32), ("exact", 32), ("detached", 32), ("exact", 8), ("detached", 8))
TIMELINES = {("proxylessnas_mobile", "ft_full", "stock", 32), ("proxylessnas_mobile", "tinytl_lb", "detached", 8)}


def build(network: str, method: str):
    """The network exactly as the what-if explorer sets it up (``ondevice.whatif.configured``: TinyTL's
    network with GroupNorm and lite branches, or the stock BatchNorm network in MobileTL mode), so
    that the explorer can show these measurements beside its predictions."""
    import copy

    from ondevice.whatif import configured

    return copy.deepcopy(configured(network, method))


def worker(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import torch
    import torch.nn.functional as F

    from ondevice import kernelize
    from ondevice.memory import estimate, measure_step, step_timeline

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model = build(spec["network"], spec["method"]).to(device)
    if spec["variant"] != "stock":
        model = kernelize(model, backward=spec["variant"], frozen_bits=spec["frozen_bits"])
    shape = (spec["batch"], 3, spec["resolution"], spec["resolution"])
    x = torch.randn(shape, device=device)
    target = torch.randint(0, CLASSES, (spec["batch"],), device=device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    measured = measure_step(model, x, target, optimizer)
    predicted = estimate(model, shape, optimizer="adam", device=spec["device"])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    row = {**{k: spec[k] for k in ("network", "method", "variant", "frozen_bits", "resolution", "batch")},
           "optimizer": "adam", "measured_peak": measured.peak, "estimated_peak": predicted.total,
           "measured_at_peak": measured.at_peak, "estimated_at_peak": predicted.at_peak,
           "measured_peak_at": measured.layer, "estimated_peak_at": predicted.peak_at,
           "largest_at_peak": [list(t) for t in measured.largest], "step_s": statistics.median(times)}
    if spec.get("timeline"):
        index, series = measured.timeline
        row["measured_timeline"] = {"event": index, "phases": measured.phases, "bytes": series}
        row["estimated_timeline"] = [[phase, layer, parts] for phase, layer, parts in
                                     step_timeline(model, shape, optimizer="adam", device=spec["device"])]
    return row


def plan(quick: bool, device: str) -> list[dict]:
    if quick:
        return [dict(network="proxylessnas_mobile", method=m, variant=v, frozen_bits=b, resolution=64, batch=2,
                     device=device) for m, v, b in (("ft_full", "stock", 32), ("tinytl_lb", "detached", 8),
                                                    ("tinytl_b", "exact", 32))]
    specs = []
    for (network, methods_), (resolution, batch), (variant, bits) in itertools.product(
            NETWORKS.items(), ((224, 8), (224, 1), (320, 8), (320, 1)), VARIANTS):
        for method in methods_:
            specs.append(dict(network=network, method=method, variant=variant, frozen_bits=bits, resolution=resolution,
                              batch=batch, device=device,
                              timeline=(resolution, batch) == (224, 8) and (network, method, variant, bits) in TIMELINES))
    return specs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="64 px, batch 2, three configurations")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one configuration as JSON, in a fresh process
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    rows = []
    for spec in tqdm(plan(args.quick, args.device), desc="configurations (a fresh process each)"):
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent)
        if done.returncode != 0:
            raise SystemExit(f"configuration {spec} failed:\n{done.stderr}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    import torch

    info = machine()
    device = "cpu-" + host()
    if args.device == "cuda":
        device = torch.cuda.get_device_name().replace(" ", "-")
        info.update(cuda=torch.version.cuda, driver=driver_version())
    result = {"what": "peak memory of a training step, measured (counting allocator / CUDA allocator) and estimated",
              "device": device, "quick": args.quick, "rows": rows, "machine": info, "date": today(),
              "command": command(argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "train_memory-quick" if args.quick else "train_memory"
    path = args.out / f"{name}-{args.device}.json"
    path.write_text(json.dumps(result) + "\n")
    worst = max(abs(r["estimated_peak"] / r["measured_peak"] - 1) for r in rows)
    print(f"{len(rows)} configurations; estimate within {100 * worst:.1f}% of the measured peak everywhere; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
