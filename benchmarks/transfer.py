"""Run the transfer experiments of chapter 5 and record them (``ondevice.experiments``).

Every method of ``ondevice.experiments.METHODS`` on every target task, over several seeds,
from the shipped pretrained backbones, on the CPU. Writes ``benchmarks/results/transfer.json``
(runs, setup, command, time, machine and versions), which the chapter plots.

Usage: ``python benchmarks/transfer.py [--tasks T ...] [--seeds S ...] [--epochs E] [--n-train N]``

``--refresh-costs`` trains nothing: it recomputes the memory and FLOPs fields of the recorded
runs with the current memory engine (they depend on the network, method and batch shape, not on
the training) and notes the date and command in the file under ``costs_refreshed``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from common import command, machine, today

from ondevice.experiments import METHODS, RECORDED, Setup, load, refresh_costs, run, save, summarize

TASKS = ("target", "color_shift", "new_classes", "digits")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=Setup.epochs)
    parser.add_argument("--n-train", type=int, default=Setup.n_train)
    parser.add_argument("--out", type=Path, default=RECORDED)
    parser.add_argument("--refresh-costs", action="store_true",
                        help="recompute the memory and FLOPs of the runs recorded in --out; train nothing")
    args = parser.parse_args(argv)
    if args.refresh_costs:
        runs, setup, facts = load(args.out)
        facts["costs_refreshed"] = {"date": today(), "command": command(argv)}
        save(refresh_costs(runs, setup), args.out, setup, **facts)
        print(f"recomputed the memory and FLOPs of {len(runs)} runs in {args.out}")
        return
    setup = replace(Setup(), epochs=args.epochs, n_train=args.n_train)
    start = time.perf_counter()
    runs = run(args.tasks, args.methods, args.seeds, setup)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save(runs, args.out, setup, command=command(argv), seconds=time.perf_counter() - start,
         machine=machine(), date=today())
    for row in summarize(runs):
        print(f"{row.task:12s} {row.method:14s} {100 * row.accuracy:5.1f} +- {100 * row.accuracy_std:4.1f}% "
              f"paper {row.memory['paper'] / 1e6:6.2f} MB  pytorch {row.memory['pytorch'] / 1e6:6.2f} MB")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
