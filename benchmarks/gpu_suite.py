"""One prepared GPU run: everything the book needs measured on a CUDA machine, in one go, in
under 8 minutes (chapter 4, "Speed"; issue: kernels ready for a GPU before one runs them).

Steps, in order, each a subprocess with its own time limit and log, all writing under one folder:

1. ``versions``: device, driver, CUDA, torch, triton, python (``versions.json``);
2. ``kernel tests``: the kernel tests on CUDA tensors (``KERNELS_TEST_DEVICE=cuda``, compiled
   Triton, not the interpreter; ``kernel-tests.xml``);
3. ``gn_act float32`` and ``gn_act bfloat16``: ``benchmarks/gn_act.py`` (eager, torch.compile,
   fused exact and detached; the reference and the large shape) with ``--out``;
4. ``train_memory``: ``benchmarks/train_memory.py --device cuda --out DIR/train_memory``, skipped
   with a message when that script does not exist.

The run stops at the first step that fails or runs out of time: the steps after it are marked
"not run", ``suite.json`` says which step failed and why, and the exit status is 1.

``--dry-run`` runs the same plan on the CPU with tiny shapes: the tests in Triton's interpreter
(a few of them), ``gn_act.py --check``, and ``train_memory.py --help`` (the script parses its
arguments), so that the first real run does not fail on a typo (``tests/test_gpu_suite.py``).

Usage: ``python benchmarks/gpu_suite.py OUT_DIR [--dry-run] [--budget-s 480]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import driver_version

ROOT = Path(__file__).resolve().parent.parent
KERNEL_TESTS = ["tests/test_kernels_gn_act.py", "tests/test_kernels_affine_act.py", "tests/test_kernels_bits.py"]
DRY_RUN_TESTS = "bits_layout or strided or once_differentiable or round_trip"  # a few, in the interpreter
TRAIN_MEMORY = ROOT / "benchmarks" / "train_memory.py"


@dataclass
class Step:
    name: str
    argv: list[str]
    env: dict = field(default_factory=dict)
    limit_s: float = 120.0
    needs: Path | None = None  # skipped, with a message, when this file is absent


def versions(dry_run: bool) -> dict:
    """The machine a result was measured on."""
    import torch
    import triton

    cuda = torch.cuda.is_available() and not dry_run
    return {"device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})",
            "driver": driver_version() if cuda else None, "cuda": torch.version.cuda, "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version(), "dry_run": dry_run,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def plan(out: Path, dry_run: bool) -> list[Step]:
    """The steps of the module docstring (the dry run's CPU flavour of each)."""
    py = sys.executable
    device = "cpu" if dry_run else "cuda"
    tests = [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *KERNEL_TESTS,
             f"--junitxml={out / 'kernel-tests.xml'}"] + (["-k", DRY_RUN_TESTS] if dry_run else [])
    gn_act = [py, "benchmarks/gn_act.py", "--out", str(out)] + (["--check"] if dry_run else ["--repeats", "20"])
    memory = [py, str(TRAIN_MEMORY)] + (["--help"] if dry_run else ["--device", "cuda", "--out", str(out / "train_memory")])
    return [
        Step("kernel tests", tests, {"KERNELS_TEST_DEVICE": device, "TRITON_INTERPRET": "1" if dry_run else "0"}, 130),
        Step("gn_act float32", gn_act + ["--dtype", "float32"], limit_s=130),
        Step("gn_act bfloat16", gn_act + ["--dtype", "bfloat16"], limit_s=110),
        Step("train_memory", memory, limit_s=110, needs=TRAIN_MEMORY),
    ]


def run_step(step: Step, out: Path, remaining_s: float) -> dict:
    """Run one step; its output goes to ``out/<name>.log``."""
    if step.needs is not None and not step.needs.exists():
        message = f"skipped: {step.needs.relative_to(ROOT)} does not exist (yet)"
        print(f"[{step.name}] {message}", flush=True)
        return {"status": "skipped", "message": message}
    limit = max(1.0, min(step.limit_s, remaining_s))
    log = out / (step.name.replace(" ", "_") + ".log")
    start = time.perf_counter()
    print(f"[{step.name}] {' '.join(step.argv[1:])} (limit {limit:.0f} s)", flush=True)
    with log.open("w") as handle:
        try:
            proc = subprocess.run(step.argv, cwd=ROOT, env={**os.environ, **step.env}, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=limit)
            status = "passed" if proc.returncode == 0 else "failed"
            message = f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            status, message = "failed", f"ran past its limit of {limit:.0f} s"
    seconds = time.perf_counter() - start
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    print(f"[{step.name}] {status} in {seconds:.1f} s: {message}" + "".join(f"\n    {line}" for line in tail), flush=True)
    return {"status": status, "message": message, "seconds": round(seconds, 1), "log": log.name,
            "command": step.argv[1:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for every result and log (created)")
    parser.add_argument("--dry-run", action="store_true", help="the same plan on the CPU, tiny shapes")
    parser.add_argument("--budget-s", type=float, default=480.0, help="time for all steps (default 480 s)")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("the suite measures a CUDA GPU; use --dry-run to rehearse it on the CPU")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    suite = {"versions": versions(args.dry_run), "budget_s": args.budget_s, "steps": {}}
    (out / "versions.json").write_text(json.dumps(suite["versions"], indent=2) + "\n")
    print(f"[versions] {suite['versions']}", flush=True)
    start, failed = time.perf_counter(), None
    for step in plan(out, args.dry_run):
        if failed:
            suite["steps"][step.name] = {"status": "not run", "message": f"stopped after {failed!r} failed"}
            continue
        result = run_step(step, out, args.budget_s - (time.perf_counter() - start))
        suite["steps"][step.name] = result
        if result["status"] == "failed":
            failed = step.name
    suite["seconds"] = round(time.perf_counter() - start, 1)
    suite["failed"] = failed
    (out / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
    print(f"suite {'FAILED at ' + repr(failed) if failed else 'passed'} in {suite['seconds']} s; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
