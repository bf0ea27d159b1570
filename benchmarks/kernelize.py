"""What kernelize buys, at the papers' setting: bytes kept for backward and training-step time of
every method, stock against kernelized (chapter 4, "Putting the kernels in a network").

For each network and method (224 px, batch 8, a 102-class head as in TinyTL's Table 2; Adam)
it records: the bytes stock PyTorch keeps (measured with saved-tensor hooks) and the ``pytorch``
estimate; the ``paper`` profile's saved activations and total; for ``kernelize(backward=...)``
in both modes the measured bytes, the ``masked`` estimate and the parameter bytes at 32 and 8
bits; and the median time of a full training step (forward, backward, Adam) of the stock and
the kernelized model, after one warm-up step, with the garbage collector off. Writes
``benchmarks/results/kernelize-<host>.json`` and prints a table.

Usage: ``python benchmarks/kernelize.py [--steps 5] [--quick] [--out DIR]`` (``--quick``: one
network and three methods at 64 px, batch 2: the code path in seconds, for CI).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from common import command, host, machine, timed, today
from tqdm import tqdm

from ondevice import kernelize, methods
from ondevice.lite_residual import add_lite_residuals
from ondevice.memory import estimate, measure
from ondevice.models import mobilenet_v2, mobilenet_v3_large, proxylessnas_mobile, to_groupnorm

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 102  # TinyTL's Table 2 (Flowers102)
NETWORKS = {
    "ProxylessNAS-Mobile (GN+WS, lite)": lambda: add_lite_residuals(to_groupnorm(proxylessnas_mobile(num_classes=CLASSES))),
    "MobileNetV2": lambda: mobilenet_v2(num_classes=CLASSES),
    "MobileNetV3-Large": lambda: mobilenet_v3_large(num_classes=CLASSES),
}
METHODS = {"FT-Full": ("ft_full", {}), "FT-Last": ("ft_last", {}), "FT-Norm+Last": ("ft_norm_last", {}),
           "TinyTL-B": ("tinytl_b", {}), "TinyTL-L": ("tinytl_l", {}), "TinyTL-L+B": ("tinytl_lb", {}),
           "MobileTL K=5": ("mobiletl", {"k_blocks": 5})}
MODES = ("exact", "detached")


def cases(quick: bool):
    if quick:
        return [("ProxylessNAS-Mobile (GN+WS, lite)", m) for m in ("FT-Full", "TinyTL-B", "TinyTL-L+B")]
    return [(n, m) for n in NETWORKS for m in METHODS if not (m.startswith("MobileTL") and "GN" in n)]


def trainer(model, x, target):
    """One training step of ``model`` (forward, cross-entropy, backward, Adam) as a function."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = F.cross_entropy(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_seconds(models: dict, x, target, steps: int) -> dict:
    """Median seconds of a training step of each model, after a warm-up step each; the models take
    turns (one step each, ``steps`` rounds) so that a change in the machine's load affects all."""
    steppers = {name: trainer(model, x, target) for name, model in models.items()}
    for step in steppers.values():
        step()
    times = {name: [] for name in steppers}
    for _ in range(steps):
        for name, step in steppers.items():
            times[name].append(timed(step) / 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def stored_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_case(network: str, method: str, shape, steps: int) -> dict:
    torch.manual_seed(0)
    name, options = METHODS[method]
    model = methods.apply(NETWORKS[network](), name, **options)
    x = torch.randn(shape)
    target = torch.randint(0, CLASSES, (shape[0],))
    paper = estimate(model, shape, profile="paper", optimizer="adam")
    row = {"network": network, "method": method,
           "paper": {"saved_activations": paper.saved_activations, "total": paper.total,
                     "total_8bit": estimate(model, shape, profile="paper", frozen_param_bits=8).total},
           "stock": {"measured": measure(model, x).saved_activations,
                     "estimate": estimate(model, shape, profile="pytorch").saved_activations,
                     "params": stored_bytes(model)},
           "kernelized": {}}
    timing = {"stock": copy.deepcopy(model)}
    for mode in MODES:
        lean = {bits: kernelize(copy.deepcopy(model), backward=mode, frozen_bits=bits, strict=True) for bits in (32, 8)}
        row["kernelized"][mode] = {
            "measured": measure(lean[32], x).saved_activations,
            "measured_8bit": measure(lean[8], x).saved_activations,
            "estimate": estimate(model, shape, profile="masked", backward=mode).saved_activations,
            "params": stored_bytes(lean[32]), "params_8bit": stored_bytes(lean[8]),
            "estimate_params_8bit": estimate(model, shape, profile="masked", frozen_param_bits=8).params}
        timing[mode] = lean[32]
    seconds = step_seconds(timing, x, target, steps)
    row["stock"]["step_s"] = seconds["stock"]
    for mode in MODES:
        row["kernelized"][mode]["step_s"] = seconds[mode]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant")
    parser.add_argument("--quick", action="store_true", help="one network, three methods, 64 px, batch 2")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    resolution, batch = (64, 2) if args.quick else (224, 8)
    shape = (batch, 3, resolution, resolution)
    todo = cases(args.quick)
    rows = [run_case(n, m, shape, args.steps) for n, m in tqdm(todo, desc="network x method")]
    result = {"what": "kernelize: bytes kept for backward and training-step time, stock vs kernelized",
              "resolution": resolution, "batch": batch, "classes": CLASSES, "optimizer": "adam",
              "steps": args.steps, "quick": args.quick, "rows": rows, "machine": machine(), "date": today(),
              "command": command(argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kernelize{'-quick' if args.quick else ''}-{host()}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'network':34s} {'method':13s} {'paper':>8s} {'stock':>8s} {'exact':>8s} {'detach':>8s}  "
          f"{'step stock':>10s} {'exact':>6s} {'detach':>6s}  (MB, s)")
    for r in rows:
        k = r["kernelized"]
        print(f"{r['network'][:34]:34s} {r['method']:13s} {r['paper']['saved_activations'] / 1e6:8.2f} "
              f"{r['stock']['measured'] / 1e6:8.2f} {k['exact']['measured'] / 1e6:8.2f} "
              f"{k['detached']['measured'] / 1e6:8.2f}  {r['stock']['step_s']:10.3f} "
              f"{k['exact']['step_s'] / r['stock']['step_s']:5.2f}x {k['detached']['step_s'] / r['stock']['step_s']:5.2f}x")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
