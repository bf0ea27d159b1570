"""Run the transfer experiments of chapter 5 and record them (``ondevice.experiments``).

Every method of ``ondevice.experiments.METHODS`` on the built-in target tasks (``digits``, far
from the source domain; ``new_classes``, near it), five seeds, from the shipped pretrained
backbones, on the CPU. Writes ``benchmarks/results/transfer.json`` after every run (runs, setup,
summaries with 95% intervals, verdicts, and per session the command, machine and time), which
the chapter reads. Interrupted, it resumes: a rerun with the same setup keeps the recorded runs
and does the others (``--fresh`` starts over). Meant for the background::

    OMP_NUM_THREADS=1 nohup nice -n 10 python benchmarks/transfer.py > transfer.log 2>&1 &

``--refresh-costs`` trains nothing: it recomputes the memory and FLOPs fields of the recorded
runs with the current memory engine (they depend on the network, method and batch shape, not on
the training) and notes the date and command in the file under ``costs_refreshed``.

**Real data.** ``--data DIR --weights FILE`` fine-tunes a torchvision checkpoint (MobileNetV2,
MobileNetV3 or ResNet-50, ``ondevice.pretrained.load_torchvision``) on an ImageFolder data set
(``DIR/<class>/*.jpg`` or ``DIR/train/...`` + ``DIR/test/...``; e.g. Flowers102) at 224 px with
the methods of the BatchNorm backbone (MobileTL only for the MobileNets), into
``benchmarks/results/transfer-<DIR name>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from common import command, machine, today

from ondevice.blocks import InvertedResidual
from ondevice.data import folder_loaders
from ondevice.experiments import (BN_METHODS, METHODS, RECORDED, TASKS, Setup, load, refresh_costs, run, save,
                                  summarize)
from ondevice.pretrained import load_torchvision


def real_data(args, setup: Setup):
    """The ``data`` and ``backbone`` arguments of ``run`` for ``--data`` / ``--weights``."""
    name = args.data.resolve().name

    def data(seed, setup):
        train, test, classes = folder_loaders(args.data, resolution=setup.resolution, batch_size=setup.batch_size,
                                              seed=seed, num_workers=args.workers)
        return train, test, len(classes)

    def backbone(num_classes):
        return load_torchvision(args.weights, args.arch, num_classes=num_classes)

    probe = load_torchvision(args.weights, args.arch)  # fail early, before any run, on a bad file
    if not any(isinstance(b, InvertedResidual) for b in probe.modules()):
        mobiletl = [m for m in args.methods if METHODS[m].name == "mobiletl"]
        if mobiletl and args.methods_given:
            raise SystemExit(f"{', '.join(mobiletl)} need inverted residual blocks; {args.weights} has none")
        args.methods = [m for m in args.methods if m not in mobiletl]
    return {name: data}, backbone


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=None, help="rows of ondevice.experiments.METHODS")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=Setup.epochs)
    parser.add_argument("--n-train", type=int, default=Setup.n_train, help="training images per class")
    parser.add_argument("--n-test", type=int, default=Setup.n_test, help="test images per class")
    parser.add_argument("--resolution", type=int, default=None, help="default that of ondevice.experiments.Setup, or 224 with --data")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="discard the runs recorded in --out")
    parser.add_argument("--refresh-costs", action="store_true",
                        help="recompute the memory and FLOPs of the runs recorded in --out; train nothing")
    parser.add_argument("--data", type=Path, help="an ImageFolder data set (real-data recipe)")
    parser.add_argument("--weights", type=Path, help="a torchvision checkpoint (with --data)")
    parser.add_argument("--arch", default=None, help="its architecture (default: found from its keys)")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (with --data)")
    args = parser.parse_args(argv)
    if (args.data is None) != (args.weights is None):
        parser.error("--data and --weights go together")
    args.methods_given = args.methods is not None
    args.methods = args.methods or list(BN_METHODS if args.data else METHODS)
    for m in args.methods:
        if m not in METHODS:
            parser.error(f"--methods must be among {list(METHODS)}, got {m!r}")
    if args.data and any(m not in BN_METHODS for m in args.methods):
        parser.error(f"with --data, --methods must be among the BatchNorm rows {list(BN_METHODS)}")
    out = args.out or (RECORDED if args.data is None else RECORDED.with_name(f"transfer-{args.data.resolve().name}.json"))
    if args.refresh_costs:
        runs, setup, facts = load(out)
        facts["costs_refreshed"] = {"date": today(), "command": command(argv)}
        save(refresh_costs(runs, setup), out, setup, **facts)
        print(f"recomputed the memory and FLOPs of {len(runs)} runs in {out}")
        return
    resolution = args.resolution or (224 if args.data else Setup.resolution)
    setup = replace(Setup(), epochs=args.epochs, n_train=args.n_train, n_test=args.n_test, resolution=resolution)
    data = backbone = None
    tasks = args.tasks
    if args.data:
        data, backbone = real_data(args, setup)
        tasks = list(data)
    if args.fresh and out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    facts = {"command": command(argv), "machine": {**machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
             "date": today()}
    if args.data:
        facts["data"] = {"folder": str(args.data), "weights": str(args.weights), "arch": args.arch}
    runs = run(tasks, args.methods, args.seeds, setup, path=out, facts=facts, data=data, backbone=backbone)
    for row in summarize(runs):
        print(f"{row.task:12s} {row.method:28s} {100 * row.accuracy:5.1f} +- {100 * row.accuracy_ci95:4.1f}% "
              f"(95% CI, {row.runs} seeds)  paper {row.memory['paper'] / 1e6:6.2f} MB  "
              f"pytorch {row.memory['pytorch'] / 1e6:6.2f} MB")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main()
