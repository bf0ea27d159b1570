"""The launch plan of the fused GroupNorm + activation and its predicted time on a GPU (chapter 4,
"Speed"). A prediction, to be set beside a measurement, never in place of one.

:func:`launch_plan` lists the launches one forward + backward step makes (the same grids the
launchers compute, :mod:`kernels.tiling`), each with its programs, the programs an SM holds at
once (from the compiled kernels' registers and shared memory, ``benchmarks/results/
kernels-compile.json``), the waves that makes, and the bytes it moves to and from HBM.
:func:`predict` turns the plan into microseconds with a model whose constants are our
assumptions, named here so that a measurement can refute them:

- a launch that fills every SM streams at :data:`EFFICIENCY` of peak HBM bandwidth (our
  assumption, chapter 4, "Speed on a GPU": good Triton kernels reach 75-85%); one with fewer
  programs than SMs x programs per SM streams at that fraction of it (idle SMs draw no bandwidth);
- a second read of a tensor (the forward reads x twice, the exact backward reads x, dy and the
  mask twice) hits L2 for the share of it that fits in :data:`L2_USABLE` of the L2 (the
  second launch walks the tiles in reverse order, :func:`kernels.tiling.tile_ids`: what the first read last, it
  reads first);
- every launch costs :data:`LAUNCH_US` of fixed time (launch and drain), including the two small
  torch sums that reduce the parameter gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .roofline import MASK_BYTES
from .tiling import NUM_WARPS, row_grid

EFFICIENCY = 0.8
L2_USABLE = 0.5
LAUNCH_US = 3.0
TORCH_SUM = "torch sum (parameter gradients)"


@dataclass(frozen=True)
class GPU:
    name: str
    arch: int  # compute capability x 10
    sms: int
    hbm_bytes_per_s: float
    l2_bytes: int


# NVIDIA's data sheets: SMs, HBM bandwidth, L2 (the H200 is the H100's GH100 chip with more HBM).
GPUS = {
    "H200": GPU("H200", 90, 132, 4.8e12, 50 * 2**20),
    "H100": GPU("H100 SXM", 90, 132, 3.35e12, 50 * 2**20),
    "A100": GPU("A100 SXM 80GB", 80, 108, 2.039e12, 40 * 2**20),
}


@dataclass(frozen=True)
class Launch:
    kernel: str
    programs: int
    programs_per_sm: int | None  # None: no compile table given
    hbm_bytes: float
    l2_bytes: float  # bytes served by L2 (second reads)

    def waves(self, gpu: GPU) -> float | None:
        return None if not self.programs_per_sm else self.programs / (gpu.sms * self.programs_per_sm)


def occupancy(table: dict | None, arch: int, dtype: torch.dtype | None = None, hw: int | None = None) -> dict[str, int]:
    """Per kernel, the fewest programs per SM among its variants compiled for ``arch`` in a
    :mod:`kernels.compile_check` table (empty without one), counting only the variants for data of
    ``dtype`` and rows of ``hw`` elements when these are given (Triton specialises on both)."""
    tt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype)
    hw_type = None
    if hw is not None:  # Triton specialises a row length that is a multiple of 16
        hw_type = "HW:i32/16" if hw % 16 == 0 else "HW:i32"
    out: dict[str, int] = {}
    for row in (table or {}).get("rows", []):
        types = row["types"].split(", ")
        data = [t for t in types if t.startswith(("x_ptr", "dy_ptr"))]
        if row["arch"] != arch:
            continue
        if data and tt and f"*{tt}" not in data[0]:  # a data kernel compiled for another dtype
            continue
        if data and hw_type and hw_type not in types and not (hw == 1 and "HW" in row["constexprs"]):
            continue  # ... or for another specialisation of the row length
        out[row["kernel"]] = min(out.get(row["kernel"], 99), row["programs_per_sm"])
    return out


def launch_plan(shape, dtype: torch.dtype, backward: str, gpu: GPU, table: dict | None = None,
                num_groups: int | None = None) -> list[Launch]:
    """The launches of one forward + ``backward`` (``"exact"`` or ``"detached"``) step of
    :func:`kernels.group_norm_act` on ``gpu`` for ``x`` of ``shape`` and ``dtype`` (8 channels per
    group unless ``num_groups``), gamma and beta trained where the mode allows."""
    if backward not in ("exact", "detached"):
        raise ValueError(f"backward must be 'exact' or 'detached', got {backward!r}")
    n, c = shape[:2]
    hw = math.prod(shape[2:])
    groups = num_groups or c // 8
    s = torch.empty((), dtype=dtype).element_size()
    numel = n * c * hw
    plan = row_grid(n * c, hw, gpu.sms)
    occ = occupancy(table, gpu.arch, dtype, hw)
    partials = n * c * plan.chunks * 4  # one float32 partial sum per row and chunk
    l2 = gpu.l2_bytes * L2_USABLE

    def reread(nbytes):  # (HBM, L2) bytes of a second read of nbytes
        hit = min(nbytes, l2)
        return nbytes - hit, hit

    def tiled(kernel, hbm, hit=0.0):
        return Launch(kernel, plan.programs, occ.get(kernel), hbm, hit)

    def small(kernel, programs, nbytes):
        return Launch(kernel, programs, occ.get(kernel), nbytes, 0.0)

    x_hbm, x_l2 = reread(numel * s)
    launches = [
        tiled("_row_stats_kernel", numel * s + 2 * partials),
        small("_group_stats_kernel", n * groups, 2 * partials),
        tiled("_norm_act_fwd_kernel", x_hbm + numel * (s + MASK_BYTES), x_l2),
    ]
    first = numel * (2 * s + MASK_BYTES)  # dy, x and the mask
    if backward == "exact":
        again_hbm, again_l2 = reread(first)
        launches += [tiled("_partials_kernel", first + 2 * partials),
                     small("_vjp_means_kernel", n * groups, 2 * partials),
                     tiled("_exact_dx_kernel", again_hbm + numel * s, again_l2)]
    else:
        launches.append(tiled("_detached_dx_kernel", numel * (2 * s + MASK_BYTES) + partials))
    sums = 2 if backward == "exact" else 1  # torch: d(gamma), d(beta) from the partials
    launches += [Launch(TORCH_SUM, gpu.sms, None, partials, 0.0) for _ in range(sums)]
    return launches


def predict_us(launch: Launch, gpu: GPU) -> float:
    """Microseconds of one launch under the module's model (a torch reduction is taken to fill
    the GPU; a kernel without a compile table to hold one program per SM)."""
    slots = gpu.sms * (launch.programs_per_sm or 1)
    filled = 1.0 if launch.kernel == TORCH_SUM else min(1.0, launch.programs / slots)
    return LAUNCH_US + launch.hbm_bytes / (gpu.hbm_bytes_per_s * EFFICIENCY * filled) * 1e6


def predict(shape, dtype: torch.dtype, backward: str, gpu: GPU, table: dict | None = None) -> dict:
    """The plan of :func:`launch_plan` with each launch's predicted time, and the totals."""
    launches = launch_plan(shape, dtype, backward, gpu, table)
    rows = [{"kernel": l.kernel, "programs": l.programs, "programs_per_sm": l.programs_per_sm,
             "waves": l.waves(gpu), "hbm_mb": l.hbm_bytes / 1e6, "l2_mb": l.l2_bytes / 1e6,
             "predicted_us": predict_us(l, gpu)} for l in launches]
    return {"gpu": gpu.name, "shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "backward": backward,
            "launches": rows, "hbm_mb": sum(r["hbm_mb"] for r in rows),
            "predicted_us": sum(r["predicted_us"] for r in rows), "num_warps": NUM_WARPS}


def gpu_for(device_name: str) -> GPU | None:
    """The :data:`GPUS` entry of a device named like ``torch.cuda.get_device_name()`` (None for
    another GPU, or a PCIe / NVL part with other bandwidth)."""
    name = device_name.upper()
    if "PCIE" in name or "NVL" in name:
        return None
    if "A100" in name:
        return GPUS["A100"] if "80GB" in name else None
    return next((gpu for key, gpu in GPUS.items() if key in name), None)


__all__ = ["EFFICIENCY", "GPU", "GPUS", "L2_USABLE", "LAUNCH_US", "Launch", "gpu_for", "launch_plan", "occupancy",
           "predict", "predict_us"]
