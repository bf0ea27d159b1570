"""Pretrain the backbones the book ships (chapter 5; ``ondevice.pretrained``).

Trains :func:`ondevice.models.proxylessnas_tiny` on the synthetic ``"source"`` task of
``ondevice.data`` on the CPU, seeded, twice:

1. ``proxylessnas_tiny-bn``: BatchNorm, from scratch (Adam, cosine schedule);
2. ``proxylessnas_tiny-gn-lite``: GroupNorm + weight standardization from scratch, then lite
   residual branches inserted and trained on the source task with the backbone frozen
   (``methods.tinytl_l``: branches + classifier), as TinyTL pretrains them.

Our choices, the same for both backbones: 64 px inputs and width 0.35, the largest our CPU budget
allowed for the whole chapter-5 experiment (the transfer runs dominate it, and they run at the
backbones' resolution, ``ondevice.experiments.Setup``): in a four-epoch trial at 32 px, where the
last feature maps are 2 x 2, the GroupNorm network learned far more slowly than at 64 px, and
than BatchNorm at 32 px; a 96 px GroupNorm backbone reached 99.8% source accuracy but would have
made every transfer step process 2.25 times the pixels. The scale of the last norm of every residual block
starts at 0 (each block starts as the identity, as Goyal et al. 2017 initialise ResNets); Adam at
3e-3 with a cosine schedule, batch 32, 15 backbone epochs and 5 lite-branch epochs on 300 images
per class. The shipped weights were made with the defaults (``python benchmarks/pretrain.py``;
``ondevice/weights/manifest.json`` records each one's arguments, time and accuracy).

Writes ``ondevice/weights/<name>.pt``, the manifest ``ondevice/weights/manifest.json`` (the
configuration, SHA-256, source accuracy, time and command of each) and
``benchmarks/results/pretrain.json`` (also the training curves: loss, training and source test
accuracy per epoch). It can be interrupted: every epoch is checkpointed under ``--work`` and a
rerun with the same arguments continues (``--fresh`` starts over).

Usage: ``python benchmarks/pretrain.py [--epochs E] [--lite-epochs L] [--n-train N] [--out DIR]``
(``--quick`` trains for a few steps into a temporary folder: a smoke test, results not kept).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import command, machine, today
from torch import nn

from ondevice import methods
from ondevice.blocks import InvertedResidual
from ondevice.data import TASKS, loaders
from ondevice.lite_residual import add_lite_residuals
from ondevice.pretrained import WEIGHTS, build_backbone, sha256
from ondevice.train import evaluate, fit

RESULTS = Path(__file__).resolve().parent / "results"
BACKBONES = (("proxylessnas_tiny-gn-lite", "gn", True), ("proxylessnas_tiny-bn", "bn", False))


def zero_init_residuals(net: nn.Module) -> None:
    """Our choice: every residual block starts as the identity (the last norm's scale is 0)."""
    for block in net.blocks:
        if isinstance(block, InvertedResidual) and block.use_residual:
            nn.init.zeros_(block.project.norm.weight)


def curves(history) -> dict:
    return {"loss": history.loss, "train_accuracy": history.accuracy, "source_accuracy": history.extra}


def train_backbone(name: str, config: dict, args, source_train, source_test) -> dict:
    """Pretrain one backbone (resuming from ``args.work`` if a run was interrupted)."""
    work = args.work / (f"{name}-r{args.resolution}-w{args.width}-n{args.n_train}-b{args.batch_size}"
                        f"-lr{args.lr}-e{args.epochs}-l{args.lite_epochs}-s{args.seed}")  # resume only this run
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    net = build_backbone({**config, "lite": False})
    zero_init_residuals(net)

    def test_accuracy(model):
        return evaluate(model, source_test)

    print(f"{name}: backbone, {args.epochs} epochs", flush=True)
    history = fit(net, source_train, epochs=args.epochs, lr=args.lr, seed=args.seed,
                  checkpoint=work / "backbone.pt", on_epoch=test_accuracy)
    record = {"lr": args.lr, "batch_size": args.batch_size, "backbone_epochs": args.epochs,
              "backbone_train_accuracy": history.accuracy[-1], "backbone_source_accuracy": history.extra[-1],
              "backbone_seconds": history.seconds, "curves": {"backbone": curves(history)}}
    print(f"{name}: backbone source test accuracy {record['backbone_source_accuracy']:.1%}", flush=True)
    seconds = history.seconds
    if config["lite"]:
        add_lite_residuals(net)  # GroupNorm network: GN + WS branches, final gamma 0 (a no-op)
        methods.tinytl_l(net)  # branches + classifier train, the backbone is frozen
        print(f"{name}: lite branches, {args.lite_epochs} epochs", flush=True)
        history = fit(net, source_train, epochs=args.lite_epochs, lr=args.lr, seed=args.seed + 1,
                      checkpoint=work / "lite.pt", on_epoch=test_accuracy)
        record.update(lite_epochs=args.lite_epochs, lite_seconds=history.seconds)
        record["curves"]["lite"] = curves(history)
        seconds += history.seconds
    net.requires_grad_(True)
    record.update(seconds=seconds, train_accuracy=history.accuracy[-1], source_accuracy=evaluate(net, source_test),
                  parameters=sum(p.numel() for p in net.parameters()))
    file = args.out / f"{name}.pt"
    torch.save(net.state_dict(), file)
    print(f"{name}: source test accuracy {record['source_accuracy']:.1%}, {record['seconds']:.0f} s, "
          f"{file.stat().st_size / 1e6:.2f} MB", flush=True)
    return {"file": file.name, "sha256": sha256(file), "config": config, "training": record}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lite-epochs", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=300, help="source images per class")
    parser.add_argument("--n-test", type=int, default=50, help="source test images per class")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ondevice-pretrain",
                        help="per-epoch checkpoints, to resume an interrupted run")
    parser.add_argument("--fresh", action="store_true", help="ignore the checkpoints in --work")
    parser.add_argument("--quick", action="store_true", help="a few steps into a temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.lite_epochs, args.n_train, args.n_test, args.resolution = 1, 1, 2, 1, 32
        args.out = Path(tempfile.mkdtemp(prefix="pretrain-"))
        args.work = args.out / "work"
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    source_train, source_test = loaders("source", n_train=args.n_train, n_test=args.n_test,
                                        resolution=args.resolution, batch_size=args.batch_size, seed=args.seed)
    base = {"num_classes": TASKS["source"].num_classes, "width_mult": args.width, "last_channels": 256,
            "resolution": args.resolution, "source_task": "source"}
    entries = {name: train_backbone(name, {**base, "norm": norm, "lite": lite}, args, source_train, source_test)
               for name, norm, lite in BACKBONES}
    cmd = command(argv)
    curves_of = {}
    for name, entry in entries.items():
        entry["training"]["command"] = cmd
        curves_of[name] = entry["training"].pop("curves")
    (args.out / "manifest.json").write_text(json.dumps(entries, indent=2) + "\n")
    if args.quick:
        print(f"quick run: wrote {args.out} (not recorded)")
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain.json").write_text(json.dumps({
        "what": "benchmarks/pretrain.py: backbones shipped in ondevice/weights",
        "command": cmd, "n_train_per_class": args.n_train, "n_test_per_class": args.n_test,
        "wall_seconds": time.perf_counter() - start,
        "backbones": {k: v["training"] for k, v in entries.items()}, "curves": curves_of,
        "machine": machine(), "date": today(),
    }, indent=2) + "\n")
    print(f"wrote {args.out}/manifest.json and {RESULTS / 'pretrain.json'}")


if __name__ == "__main__":
    main()
