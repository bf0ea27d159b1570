"""Device presets for "what fits where" (chapter 5): how much memory a training step may use.

A board's RAM is not the training budget: firmware, the operating system and the training
runtime (PyTorch itself, before any tensor of ours exists) take their share first. Each preset
states its RAM and every deduction with its source; its :attr:`Device.budget` is what is left:

    budget = RAM - sum(deductions)

Figures and where they come from:

- RAM: the vendors' specifications (STM32F746 datasheet; Raspberry Pi product briefs; NVIDIA's
  Jetson Nano module data sheet).
- Raspberry Pi GPU firmware: ``gpu_mem`` defaults to 64 MB on Pis with less than 1 GB and 76 MB
  on the others (Raspberry Pi documentation, "config.txt: memory options").
- Linux: 100 MiB for a headless system (kernel, systemd, networking, sshd). This is our
  assumption, not a measurement on a board: measure yours with ``free -m`` and type the rest as
  a custom budget.
- PyTorch runtime: the anonymous memory (``RssAnon``) of a process that imported torch and ran
  one Adam step of a small CNN on the CPU, measured by :func:`measure_runtime` with the pinned
  torch 2.13.0 CPU wheel on x86-64 (the test suite re-measures it). The libraries' code pages
  come on top (``VmRSS`` is about 160 MiB more) but are file-backed, so the kernel can drop
  them under pressure; the aarch64 wheel a Raspberry Pi installs links other math libraries
  and is not measured here. Training on the Jetson's GPU adds a CUDA context, not counted.
- Microcontroller: PyTorch does not run there. MCUNetV3 (Lin et al., "On-Device Training Under
  256KB Memory", NeurIPS 2022) trains on this MCU within 256 KB of its 320 KB SRAM with its
  own compiled engine; the preset keeps that split (KB taken as 1024 bytes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

KIB, MIB = 2**10, 2**20


@dataclass(frozen=True)
class Deduction:
    what: str
    bytes: int
    source: str


@dataclass(frozen=True)
class Device:
    name: str
    ram: int  # bytes the board has
    ram_source: str
    deductions: tuple[Deduction, ...]

    @property
    def budget(self) -> int:
        """Bytes left for a training step: RAM minus every deduction."""
        return self.ram - sum(d.bytes for d in self.deductions)

    def describe(self) -> str:
        """The RAM, each deduction with its source, and the budget, one per line."""
        lines = [f"{self.name}: RAM {binary(self.ram)} ({self.ram_source})"]
        lines += [f"  - {d.what}: {binary(d.bytes)} ({d.source})" for d in self.deductions]
        lines.append(f"  = training budget {binary(self.budget)} = {self.budget / 1e6:,.2f} MB")
        return "\n".join(lines)


def binary(n: int) -> str:
    """Bytes in MiB, or in KiB under 1 MiB (as boards' memory is sold)."""
    return f"{n / MIB:,.0f} MiB" if n >= MIB else f"{n / KIB:,.0f} KiB"


LINUX = Deduction("headless Linux (kernel, systemd, networking, sshd)", 100 * MIB,
                  "our assumption, not measured on a board; measure yours with `free -m`")
PYTORCH = Deduction("PyTorch runtime (anonymous memory after import and one small Adam step)", 220 * MIB,
                    "ondevice.devices.measure_runtime(), torch 2.13.0 CPU wheel on x86-64; "
                    "code pages not counted; the aarch64 wheel is not measured here")
GPU_MEM = "Raspberry Pi documentation, config.txt memory options: gpu_mem default"

PRESETS: dict[str, Device] = {d.name: d for d in (
    Device("STM32F746 microcontroller (320 KB SRAM)", 320 * KIB, "ST, STM32F746 datasheet",
           (Deduction("firmware, stack and I/O outside MCUNetV3's training budget", 64 * KIB,
                      "Lin et al., On-Device Training Under 256KB Memory (NeurIPS 2022)"),)),
    Device("Raspberry Pi Zero 2 W (512 MB)", 512 * MIB, "Raspberry Pi Zero 2 W product brief",
           (Deduction("GPU firmware (gpu_mem, boards under 1 GB)", 64 * MIB, GPU_MEM), LINUX, PYTORCH)),
    Device("Raspberry Pi 4 (2 GB)", 2048 * MIB, "Raspberry Pi 4 Model B product brief",
           (Deduction("GPU firmware (gpu_mem, boards of 1 GB or more)", 76 * MIB, GPU_MEM), LINUX, PYTORCH)),
    Device("Jetson Nano (4 GB)", 4096 * MIB, "NVIDIA Jetson Nano module data sheet (shared CPU/GPU LPDDR4)",
           (LINUX, PYTORCH)),
)}

_PROBE = """
import json, re
import torch
from torch import nn
model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
opt = torch.optim.Adam(model.parameters())
model(torch.randn(1, 3, 32, 32)).sum().backward()
opt.step()
status = open("/proc/self/status").read()
print(json.dumps({k: int(re.search(k + r":\\s+(\\d+) kB", status).group(1)) * 1024 for k in ("RssAnon", "VmRSS")}))
"""


def measure_runtime() -> dict[str, int]:
    """``RssAnon`` and ``VmRSS`` (bytes) of a fresh Python process that imported torch and ran
    one Adam step of a small CNN on the CPU (Linux only: it reads ``/proc/self/status``)."""
    if not sys.platform.startswith("linux"):
        raise OSError(f"measure_runtime reads /proc/self/status (Linux only), not available on {sys.platform}")
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])
