"""Pretrain the backbones the book ships (chapter 5; ``ondevice.pretrained``).

Trains :func:`ondevice.models.proxylessnas_tiny` on the synthetic ``"source"`` task of
``ondevice.data`` on the CPU, seeded, twice:

1. ``proxylessnas_tiny-bn``: BatchNorm, from scratch (Adam, cosine schedule);
2. ``proxylessnas_tiny-gn-lite``: GroupNorm + weight standardization from scratch, then lite
   residual branches inserted and trained on the source task with the backbone frozen
   (``methods.tinytl_l``: branches + classifier), as TinyTL pretrains them.

Writes ``ondevice/weights/<name>.pt``, the manifest ``ondevice/weights/manifest.json`` (the
configuration, SHA-256, source accuracy, time and command of each) and
``benchmarks/results/pretrain.json``.

Usage: ``python benchmarks/pretrain.py [--epochs E] [--lite-epochs L] [--n-train N] [--out DIR]``
(``--quick`` trains for a few steps into a temporary folder: a smoke test, results not kept).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import command, machine, today

from ondevice import methods
from ondevice.data import TASKS, loaders
from ondevice.lite_residual import add_lite_residuals
from ondevice.pretrained import WEIGHTS, build_backbone, sha256
from ondevice.train import evaluate, fit

RESULTS = Path(__file__).resolve().parent / "results"
RESOLUTION = 32


def train_backbone(name: str, config: dict, args, source_train, source_test) -> dict:
    torch.manual_seed(args.seed)
    stem = {**config, "lite": False}
    net = build_backbone(stem)
    start = time.perf_counter()
    lr = args.lr_gn if config["norm"] == "gn" else args.lr_bn
    history = fit(net, source_train, epochs=args.epochs, lr=lr, seed=args.seed)
    record = {"lr": lr, "backbone_epochs": args.epochs, "backbone_train_accuracy": history.accuracy[-1],
              "backbone_source_accuracy": evaluate(net, source_test)}
    print(f"{name}: backbone source test accuracy {record['backbone_source_accuracy']:.1%}", flush=True)
    if config["lite"]:
        add_lite_residuals(net)  # GroupNorm network: GN + WS branches, final gamma 0 (a no-op)
        methods.tinytl_l(net)  # branches + classifier train, the backbone is frozen
        history = fit(net, source_train, epochs=args.lite_epochs, lr=lr, seed=args.seed + 1)
        record["lite_epochs"] = args.lite_epochs
    net.requires_grad_(True)
    record.update(seconds=time.perf_counter() - start, train_accuracy=history.accuracy[-1],
                  source_accuracy=evaluate(net, source_test),
                  parameters=sum(p.numel() for p in net.parameters()))
    file = args.out / f"{name}.pt"
    torch.save(net.state_dict(), file)
    print(f"{name}: source test accuracy {record['source_accuracy']:.1%}, {record['seconds']:.0f} s, "
          f"{file.stat().st_size / 1e6:.2f} MB", flush=True)
    return {"file": file.name, "sha256": sha256(file), "config": config, "training": record}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lite-epochs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=150, help="source images per class")
    parser.add_argument("--lr-gn", type=float, default=1e-3, help="Adam learning rate, GroupNorm backbone")
    parser.add_argument("--lr-bn", type=float, default=3e-3, help="Adam learning rate, BatchNorm backbone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--quick", action="store_true", help="a few steps into a temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.lite_epochs, args.n_train = 1, 1, 2
        args.out = Path(tempfile.mkdtemp(prefix="pretrain-"))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    source_train, source_test = loaders("source", n_train=args.n_train, n_test=50 if not args.quick else 1,
                                        resolution=RESOLUTION, batch_size=32, seed=args.seed)
    base = {"num_classes": TASKS["source"].num_classes, "width_mult": 0.35, "last_channels": 256,
            "resolution": RESOLUTION, "source_task": "source"}
    entries = {}
    for name, norm, lite in (("proxylessnas_tiny-gn-lite", "gn", True), ("proxylessnas_tiny-bn", "bn", False)):
        entries[name] = train_backbone(name, {**base, "norm": norm, "lite": lite}, args, source_train, source_test)
    cmd = command(argv)
    for entry in entries.values():
        entry["training"]["command"] = cmd
    (args.out / "manifest.json").write_text(json.dumps(entries, indent=2) + "\n")
    if args.quick:
        print(f"quick run: wrote {args.out} (not recorded)")
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain.json").write_text(json.dumps({
        "what": "benchmarks/pretrain.py: backbones shipped in ondevice/weights",
        "command": cmd, "backbones": {k: v["training"] for k, v in entries.items()},
        "machine": machine(), "date": today(),
    }, indent=2) + "\n")
    print(f"wrote {args.out}/manifest.json and {RESULTS / 'pretrain.json'}")


if __name__ == "__main__":
    main()
