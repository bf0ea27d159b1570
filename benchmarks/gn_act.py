"""Speed of the fused GroupNorm + activation kernels against eager PyTorch and torch.compile
(chapter 4, "Speed"; issue targets: forward+backward >= 2.5x eager and >= 1.5x torch.compile in
float32 exact mode, >= 70% of the HBM byte floor at the reference shape).

For each shape (the reference (8, 96, 112, 112) and a large one, 8 channels per group) it times
forward and forward+backward of:

- ``fused exact`` / ``fused detached``: :func:`kernels.group_norm_act` (Triton; for Hard-Swish,
  exact mode uses the true derivative, as eager does, and detached mode the STEP surrogate);
- ``eager``: ``nn.GroupNorm`` followed by the activation module;
- ``compile``: the same two modules under ``torch.compile``.

Every timed run starts with the L2 cache flushed (a 256 MiB buffer is overwritten) and is timed
with CUDA events; the median over ``--repeats`` runs is reported in microseconds, with the
effective bandwidth (floor bytes / time, :mod:`kernels.roofline`) and the percentage of the HBM
byte floor when the device's bandwidth is known; for the fused variants on a GPU that
:mod:`kernels.launch_plan` knows, the predicted time beside the measured one. It also measures
the bytes each variant saves for backward (saved-tensor hooks). Results go to
``benchmarks/results/gn_act-<device>-<dtype>.json`` (or the folder ``--out``) with the device,
driver, CUDA, torch and triton versions.

``--check`` runs the same code path on the CPU at a tiny shape (Triton's interpreter, no
torch.compile), checks the fused results against eager PyTorch, prints the table and writes
nothing unless ``--out`` names a folder: its timings mean nothing, it only proves the script
works (``tests/``, and ``benchmarks/gpu_suite.py --dry-run``).

Usage: ``python benchmarks/gn_act.py [--check] [--repeats N] [--dtype float32] [--activation relu6] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import kernels  # noqa: F401  (first: switches Triton to its interpreter when there is no GPU)
import torch
import triton
from torch import nn

from common import driver_version
from kernels import group_norm_act
from kernels.activations import STEP
from kernels.norm_act import activation_module
from kernels.launch_plan import gpu_for, predict
from kernels.roofline import byte_floor, hbm_bandwidth
from ondevice.memory import SavedTensorLog

RESULTS = Path(__file__).resolve().parent / "results"
COMPILE_TABLE = RESULTS / "kernels-compile.json"  # kernels.compile_check: programs per SM for the prediction
SHAPES = {"reference": (8, 96, 112, 112), "large": (16, 192, 112, 112)}
CHECK_SHAPES = {"check": (1, 16, 3, 5)}  # 2 groups of 15 elements: shared mask words
CHANNELS_PER_GROUP = 8
FLUSH_BYTES = 256 * 2**20
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Case:
    """One variant at one shape: parameters, input, and a step ``run(backward)``."""

    def __init__(self, variant: str, shape, dtype, activation: str, device: str, backend: str | None):
        torch.manual_seed(0)
        n, c, h, w = shape
        self.variant, self.shape, self.groups = variant, shape, c // CHANNELS_PER_GROUP
        self.x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(True)
        self.dy = torch.randn(shape, device=device, dtype=dtype)
        self.norm = nn.GroupNorm(self.groups, c).to(device=device, dtype=dtype)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)
        if variant == "fused detached":  # d(gamma) needs x, which detached mode does not keep
            self.norm.weight.requires_grad_(False)
        act = activation_module(activation)
        mode = variant.removeprefix("fused ")
        if variant.startswith("fused"):
            # exact Hard-Swish: the true derivative (from x), so that the result equals eager's
            surrogate = None if activation == "hardswish" and mode == "exact" else STEP
            self.fn = lambda x: group_norm_act(x, self.groups, self.norm.weight, self.norm.bias, self.norm.eps,
                                               activation, mode, surrogate, backend=backend)
        elif variant == "eager":
            self.fn = nn.Sequential(self.norm, act)
        elif variant == "compile":
            self.fn = torch.compile(nn.Sequential(self.norm, act))
        else:
            raise ValueError(f"unknown variant {variant!r}")

    def params(self):
        return [p for p in (self.norm.weight, self.norm.bias) if p.requires_grad]

    def zero_grad(self) -> None:
        for t in [self.x, self.norm.weight, self.norm.bias]:
            t.grad = None  # so that a backward writes fresh gradients instead of accumulating

    def run(self, backward: bool) -> torch.Tensor:
        if not backward:
            with torch.no_grad():
                return self.fn(self.x)
        y = self.fn(self.x)
        y.backward(self.dy)
        return y

    def saved_bytes(self) -> int | None:
        try:
            with SavedTensorLog(exclude=[self.norm.weight, self.norm.bias]) as log:
                self.fn(self.x)
        except Exception as error:  # e.g. a torch.compile version that rejects saved-tensor hooks
            print(f"  (saved bytes of {self.variant} not measured: {type(error).__name__}: {error})")
            return None
        return log.nbytes

    def grads(self):
        self.zero_grad()
        y = self.run(backward=True)
        return [y.detach()] + [t.grad for t in [self.x, *self.params()]]


def time_us(case: Case, backward: bool, repeats: int, cuda: bool) -> float:
    """Median microseconds of one step, L2 flushed before each (CUDA); wall clock on CPU."""
    if not cuda:
        samples = []
        for _ in range(repeats):
            case.zero_grad()
            start = time.perf_counter()
            case.run(backward)
            samples.append((time.perf_counter() - start) * 1e6)
        return statistics.median(samples)
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    for _ in range(3):  # warm up: compilation, autotuning, allocator
        case.run(backward)
    samples = []
    for _ in range(repeats):
        case.zero_grad()
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        case.run(backward)
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) * 1e3)
    return statistics.median(samples)


def eager_float32(case: Case, activation: str):
    """``y`` and the gradients of eager GroupNorm + activation in float32, on ``case``'s inputs."""
    x = case.x.detach().float().requires_grad_(True)
    w, b = (p.detach().float().requires_grad_(p.requires_grad) for p in (case.norm.weight, case.norm.bias))
    y = activation_module(activation)(nn.functional.group_norm(x, case.groups, w, b, case.norm.eps))
    y.backward(case.dy.float())
    return [y.detach()] + [t.grad for t in (x, w, b) if t.requires_grad]


def check_against_eager(case: Case, activation: str) -> None:
    """The fused results equal eager PyTorch's in float32 on the same inputs: ``y`` always, and
    in exact mode ``dx`` (but for at most 1 element in 10^4: an activation input within rounding
    of a kink, 0 or 6, may take the other side of it) and ``d(gamma)``, ``d(beta)`` (relative
    1e-2, which such flips leave)."""
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2}[case.x.dtype]
    got, want = case.grads(), eager_float32(case, activation)
    torch.testing.assert_close(got[0].float(), want[0], atol=tol, rtol=tol)
    if case.variant != "fused exact":
        return
    dx, dx_eager = got[1].float(), want[1]
    far = ((dx - dx_eager).abs() > tol * (1 + dx_eager.abs())).float().mean().item()
    if far > 1e-4:
        raise AssertionError(f"{case.variant}: dx differs from eager at a fraction {far:.2e} of the elements")
    for a, b in zip(got[2:], want[2:]):
        torch.testing.assert_close(a.float(), b, atol=max(tol, 1e-2) * b.abs().max().item(), rtol=1e-2)


def benchmark(shapes: dict, dtype, activation: str, repeats: int, check: bool) -> dict:
    cuda = not check
    device = "cuda" if cuda else "cpu"
    variants = ["fused exact", "fused detached", "eager"] + ([] if check else ["compile"])
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    bandwidth = hbm_bandwidth(device_name) if cuda else None
    gpu = gpu_for(device_name) if cuda else None
    table = json.loads(COMPILE_TABLE.read_text()) if COMPILE_TABLE.exists() else None
    rows = []
    for label, shape in shapes.items():
        eager = Case("eager", shape, dtype, activation, device, None)
        for variant in variants:
            case = eager if variant == "eager" else Case(variant, shape, dtype, activation, device,
                                                         "triton" if variant.startswith("fused") else None)
            if variant.startswith("fused"):
                check_against_eager(case, activation)
            mode = "detached" if variant == "fused detached" else "exact"
            floor = byte_floor(shape, dtype, mode)
            fwd, step = time_us(case, False, repeats, cuda), time_us(case, True, repeats, cuda)
            saved = case.saved_bytes()
            row = {"shape": list(shape), "label": label, "groups": case.groups, "variant": variant,
                   "forward_us": fwd, "forward_backward_us": step, "floor_bytes": floor["total"],
                   "gb_per_s": floor["total"] / (step * 1e-6) / 1e9,
                   "floor_percent": (100 * floor["total"] / bandwidth / (step * 1e-6)) if bandwidth else None,
                   "saved_bytes": saved,
                   "predicted_us": predict(shape, dtype, mode, gpu, table)["predicted_us"]
                   if gpu and variant.startswith("fused") else None}
            rows.append(row)
            print(f"{label:>9s} {str(shape):>22s} {variant:>15s}: fwd {fwd:10.1f} us, fwd+bwd {step:10.1f} us, "
                  f"{row['gb_per_s']:8.1f} GB/s" + (f", {row['floor_percent']:5.1f}% of floor" if bandwidth else "")
                  + (f", saved {saved:,} B" if saved is not None else "")
                  + (f", predicted {row['predicted_us']:.1f} us" if row["predicted_us"] else ""), flush=True)
    for row in rows:
        base = {r["variant"]: r for r in rows if r["label"] == row["label"]}
        row["speedup_vs_eager"] = base["eager"]["forward_backward_us"] / row["forward_backward_us"]
        if row["saved_bytes"] is not None:
            row["saved_vs_eager"] = row["saved_bytes"] / base["eager"]["saved_bytes"]
        if "compile" in base:
            row["speedup_vs_compile"] = base["compile"]["forward_backward_us"] / row["forward_backward_us"]
    return {
        "what": "GroupNorm + activation forward and forward+backward: fused Triton kernels vs eager and "
                "torch.compile; L2 flushed before every timed run; median microseconds",
        "device": device_name, "driver": driver_version() if cuda else None,
        "cuda": torch.version.cuda, "torch": torch.__version__, "triton": triton.__version__,
        "python": platform.python_version(), "dtype": str(dtype).removeprefix("torch."),
        "activation": activation, "channels_per_group": CHANNELS_PER_GROUP, "repeats": repeats,
        "hbm_bytes_per_s": bandwidth, "check": check, "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="run the code path on the CPU at a tiny shape; write nothing")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per measurement (default 50)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--activation", choices=["relu", "relu6", "hardswish"], default="relu6")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the JSON (default {RESULTS}; with --check: nothing written without it)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if not args.check and not torch.cuda.is_available():
        parser.error("timing needs a CUDA GPU; use --check to run the code path on the CPU")
    dtype = DTYPES[args.dtype]
    summary = benchmark(CHECK_SHAPES if args.check else SHAPES, dtype, args.activation,
                        1 if args.check else args.repeats, args.check)
    if args.check and args.out is None:
        print("check passed: fused results equal eager PyTorch; nothing written (CPU timings mean nothing)")
        return 0
    folder = args.out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(ch if ch.isalnum() else "-" for ch in summary["device"]).strip("-").lower()
    out = folder / f"gn_act-{name}-{args.dtype}{'-check' if args.check else ''}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(("check passed: fused results equal eager PyTorch (CPU timings mean nothing); " if args.check else "")
          + f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
