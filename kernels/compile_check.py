"""Every Triton kernel of the package, compiled ahead of time for a GPU that is not here
(chapter 4, "Speed on a GPU", ``book/04_kernels/05_speed``).

Which variants exist is asked of the launchers themselves: :func:`sweep` calls the public
functions (``group_norm_act`` forward and backward, ``affine_act``, ``pack_bits``,
``unpack_bits``, ``relu6``) on small CPU tensors for every option they take (activation, backward
mode, surrogate, dtype float32 / float16 / bfloat16, which of x, weight, bias need a gradient,
weight and bias present or not, and rows of 1, 15, 16 and 64 elements: Triton's specialisations
of a row length, and rows that do or do not start on a mask word), inside
:func:`kernels.runtime.recording_launches`, so nothing runs and each launch is recorded. A
variant is what Triton's JIT would compile for a launch: the kernel, its constexprs, its
argument types and their specialisation (multiples of 16, 16-byte aligned pointers, the value 1),
computed here with Triton's own ``specialize_impl``, and ``num_warps``. The launchers make every
pointer 16-byte aligned (:func:`kernels.tiling.aligned`) and mark the integer arguments that do
not index memory ``do_not_specialize``, so the variants are few.

:func:`compile_variant` compiles one with ``triton.compile`` for ``GPUTarget("cuda", arch, 32)``
(no driver needed) and reads the cubin's resources with the ``cuobjdump`` that ships with Triton:
registers per thread, stack, local memory and static shared memory; Triton's own dynamic shared
memory comes from the compiled kernel's metadata. :func:`check` compares them with what the
launch needs: no stack and no local memory (no spills), at most 255 registers a thread, one
program's registers and shared memory within one SM; :func:`programs_per_sm` is the occupancy
they allow.

``python -m kernels.compile_check --out FILE [--arch 90 80]`` writes the table (the recorded one
is ``benchmarks/results/kernels-compile.json``) and exits non-zero when a variant fails a check.
It needs ``TRITON_INTERPRET=0``: the interpreter's kernels cannot be compiled.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import runtime
from .activations import ACTIVATIONS, STEP
from .checks import DTYPES

ARCHS = (90, 80)
# Per-SM limits (CUDA C Programming Guide, "Technical Specifications per Compute Capability").
LIMITS = {
    90: dict(name="sm_90 (H100, H200)", registers_per_thread=255, registers_per_sm=65536, warps_per_sm=64,
             programs_per_sm=32, shared_per_sm=233472, shared_per_program=232448),
    80: dict(name="sm_80 (A100)", registers_per_thread=255, registers_per_sm=65536, warps_per_sm=64,
             programs_per_sm=32, shared_per_sm=167936, shared_per_program=166912),
}
SHARED_RESERVED = 1024  # bytes the system reserves in shared memory per program (sm_80 and later)
HW_SHAPES = {1: (1, 1), 15: (3, 5), 16: (4, 4), 64: (8, 8)}  # row lengths swept, as (H, W)


@dataclass(frozen=True)
class Variant:
    kernel: str
    fn: object
    signature: tuple  # (name, type) of every argument, "constexpr" for compile-time ones
    constexprs: tuple  # (name, value)
    attrs: tuple  # (argument index, "D" when divisible by 16 / 16-byte aligned)
    num_warps: int

    @property
    def key(self) -> tuple:
        return (self.kernel, self.signature, self.constexprs, self.attrs, self.num_warps)

    def describe(self) -> dict:
        divisible = {self.signature[i][0] for i, _ in self.attrs}
        return {"kernel": self.kernel, "num_warps": self.num_warps,
                "constexprs": {k: (v if isinstance(v, (bool, int, float)) else str(v)) for k, v in self.constexprs},
                "types": ", ".join(f"{n}:{t}{'/16' if n in divisible else ''}" for n, t in self.signature
                                   if t != "constexpr")}


def _specialize(launch: runtime.Launch) -> Variant:
    """The variant Triton's JIT compiles for ``launch`` (as ``JITFunction.run`` specialises)."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.nvidia.compiler import CUDABackend

    fn = launch.kernel
    values = dict(zip(fn.arg_names, launch.args))
    values.update(launch.constexprs)
    signature, constexprs, attrs = [], {}, []
    for i, param in enumerate(fn.params):
        name, value = param.name, values[param.name]
        if param.is_constexpr:
            signature.append((name, "constexpr"))
            constexprs[name] = value
            continue
        kind, spec = native_specialize_impl(CUDABackend, value, param.is_const, not param.do_not_specialize,
                                            not param.do_not_specialize_on_alignment)[:2]
        if kind == "constexpr":  # an integer 1: Triton compiles it in as a constant
            signature.append((name, "constexpr"))
            constexprs[name] = spec
            continue
        signature.append((name, kind))
        if spec == "D":
            attrs.append((i, "D"))
    return Variant(fn.__name__, fn, tuple(signature), tuple(sorted(constexprs.items())), tuple(attrs),
                   launch.num_warps)


def _grad_patterns(exact: bool):
    for x_grad, w_grad, b_grad in itertools.product((True, False), repeat=3):
        if w_grad and not exact:
            continue  # detached mode rejects a trainable gamma
        yield x_grad, w_grad, b_grad


def sweep() -> list[Variant]:
    """Every distinct variant the launchers pick over the options of the module docstring."""
    from . import affine_act, group_norm_act, pack_bits, relu6, unpack_bits

    records: list[runtime.Launch] = []
    with runtime.recording_launches() as records:
        for dtype, (hw, (h, w)) in itertools.product(DTYPES, HW_SHAPES.items()):
            x = torch.randn(2, 4, h, w).to(dtype)
            dy = torch.randn(2, 4, h, w).to(dtype)
            for activation, backward, affine in itertools.product(ACTIVATIONS, ("exact", "detached"),
                                                                  ("both", "weight", "bias", "none")):
                surrogates = [STEP] + ([None] if activation == "hardswish" and backward == "exact" else [])
                for surrogate, grads in itertools.product(surrogates, _grad_patterns(backward == "exact")):
                    weight = torch.rand(4, dtype=dtype) + 0.5 if affine in ("both", "weight") else None
                    bias = torch.randn(4, dtype=dtype) if affine in ("both", "bias") else None
                    leaves = [t.requires_grad_(g) for t, g in zip((x.clone(), weight, bias), grads) if t is not None]
                    y = group_norm_act(leaves[0], 2, weight, bias, activation=activation, backward=backward,
                                       surrogate=surrogate, backend="triton")
                    if y.requires_grad:
                        y.backward(dy)
            for activation, (x_grad, shift_grad) in itertools.product(ACTIVATIONS, itertools.product((1, 0), (1, 0))):
                xs, shift = x.clone().requires_grad_(bool(x_grad)), torch.randn(4).requires_grad_(bool(shift_grad))
                y = affine_act(xs, torch.rand(4) + 0.5, shift, activation=activation, backend="triton")
                if y.requires_grad:
                    y.backward(dy)
        for n in (1, 16, 33):
            pack_bits(torch.zeros(n, dtype=torch.bool), backend="triton")
            unpack_bits(torch.zeros(2, dtype=torch.int32), n, backend="triton")
            for dtype in DTYPES + (torch.float64,):
                relu6(torch.zeros(n, dtype=dtype), backend="triton")
    unique = {}
    for launch in records:
        variant = _specialize(launch)
        unique.setdefault(variant.key, variant)
    return list(unique.values())


def cuobjdump() -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def compile_variant(variant: Variant, arch: int) -> dict:
    """Compile ``variant`` for ``sm_<arch>``; its resources as cuobjdump and Triton report them."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {(variant.fn.arg_names.index(k),): v for k, v in variant.constexprs}
    attrs = {(i,): [["tt.divisibility", 16]] for i, _ in variant.attrs}
    source = ASTSource(variant.fn, dict(variant.signature), constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": variant.num_warps})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        out = subprocess.run([cuobjdump(), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                             check=True).stdout
    usage = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out.split("Function", 1)[1]))
    return {"arch": arch, **variant.describe(), "registers": int(usage["REG"]), "stack": int(usage["STACK"]),
            "local": int(usage["LOCAL"]), "shared_static": int(usage["SHARED"]),
            "shared_dynamic": int(compiled.metadata.shared)}


def programs_per_sm(row: dict) -> int:
    """Programs (CTAs) one SM can hold at once, from the registers, shared memory and warps of
    ``row`` (registers are allocated per warp in units of 256)."""
    limit = LIMITS[row["arch"]]
    per_warp = -(-row["registers"] * 32 // 256) * 256
    by_registers = limit["registers_per_sm"] // per_warp // row["num_warps"]
    by_warps = limit["warps_per_sm"] // row["num_warps"]
    shared = row["shared_static"] + row["shared_dynamic"] + SHARED_RESERVED
    return min(limit["programs_per_sm"], by_registers, by_warps, limit["shared_per_sm"] // shared)


def check(row: dict) -> list[str]:
    """What is wrong with a compiled variant (empty: nothing)."""
    limit, problems = LIMITS[row["arch"]], []
    if row["stack"] or row["local"]:
        problems.append(f"spills: STACK {row['stack']} B, LOCAL {row['local']} B")
    if row["registers"] > limit["registers_per_thread"]:
        problems.append(f"{row['registers']} registers a thread > {limit['registers_per_thread']}")
    if row["registers"] * 32 * row["num_warps"] > limit["registers_per_sm"]:
        problems.append(f"{row['registers']} registers x {32 * row['num_warps']} threads exceed one SM's registers")
    if row["shared_static"] + row["shared_dynamic"] > limit["shared_per_program"]:
        problems.append(f"shared memory {row['shared_static'] + row['shared_dynamic']} B > "
                        f"{limit['shared_per_program']} B a program")
    return problems


def run(archs=ARCHS, progress: bool = True) -> dict:
    """The whole table: every variant of :func:`sweep` compiled for every arch in ``archs``."""
    import triton
    from tqdm.auto import tqdm

    if runtime.interpreter_enabled():
        raise RuntimeError("kernels.compile_check compiles real kernels: run it with TRITON_INTERPRET=0 "
                           "(set before anything imports triton)")
    variants = sweep()
    start = time.perf_counter()
    rows = []
    for variant, arch in tqdm(list(itertools.product(variants, archs)), desc="compiling", disable=not progress):
        row = compile_variant(variant, arch)
        row["programs_per_sm"] = programs_per_sm(row)
        row["problems"] = check(row)
        rows.append(row)
    return {
        "what": "every Triton kernel variant the launchers pick, compiled ahead of time (triton.compile, "
                "GPUTarget('cuda', arch, 32)); resources read from the cubin by Triton's cuobjdump",
        "triton": triton.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "archs": {str(a): LIMITS[a]["name"] for a in archs}, "limits": {str(a): LIMITS[a] for a in archs},
        "variants": len(variants), "compiled": len(rows), "compile_seconds": round(time.perf_counter() - start, 1),
        "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }


def summary(table: dict) -> list[dict]:
    """Per kernel and arch: how many variants, the most registers, the least occupancy, problems."""
    out = {}
    for row in table["rows"]:
        s = out.setdefault((row["kernel"], row["arch"]), {"kernel": row["kernel"], "arch": row["arch"], "variants": 0,
                                                          "max_registers": 0, "min_programs_per_sm": 99,
                                                          "max_shared": 0, "problems": 0})
        s["variants"] += 1
        s["max_registers"] = max(s["max_registers"], row["registers"])
        s["min_programs_per_sm"] = min(s["min_programs_per_sm"], row["programs_per_sm"])
        s["max_shared"] = max(s["max_shared"], row["shared_static"] + row["shared_dynamic"])
        s["problems"] += bool(row["problems"])
    return list(out.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--arch", type=int, nargs="+", choices=ARCHS, default=list(ARCHS))
    args = parser.parse_args(argv)
    table = run(args.arch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    for s in summary(table):
        print(f"{s['kernel']:>22s} sm_{s['arch']}: {s['variants']:3d} variants, <= {s['max_registers']:3d} registers, "
              f">= {s['min_programs_per_sm']:2d} programs/SM, <= {s['max_shared']:6d} B shared, "
              f"{s['problems']} with problems")
    bad = [r for r in table["rows"] if r["problems"]]
    for r in bad:
        print(f"FAILED {r['kernel']} sm_{r['arch']} {r['constexprs']}: {'; '.join(r['problems'])}", file=sys.stderr)
    print(f"{table['compiled']} compiled ({table['variants']} variants) in {table['compile_seconds']} s with triton "
          f"{table['triton']}; {len(bad)} failed; wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
