"""The HBM byte floor of the fused GroupNorm + activation (chapter 4, "Speed on a GPU",
``book/04_kernels/05_speed``).

A memory-bound kernel cannot be faster than the time its unavoidable traffic to and from HBM
takes. Per element, with ``s`` bytes per element of ``x`` (and the packed mask at 1/8 byte):

=================  ====================  ===========================================
pass               bytes per element     what must move
=================  ====================  ===========================================
forward            ``2 s + 1/8``          read x; write y and the mask
exact backward     ``3 s + 1/8``          read x, dy and the mask; write dx
detached backward  ``2 s + 1/8``          read dy and the mask; write dx
=================  ====================  ===========================================

Per-channel and per-group vectors (gamma, beta, statistics, partial sums) are negligible and
left out. The floor counts each tensor once: a kernel that reads a tensor twice reaches it only
when the second read hits the L2 cache.
"""

from __future__ import annotations

import math

import torch

# Peak HBM bandwidth, bytes per second: NVIDIA's data sheets (H100 SXM 3.35 TB/s, H200 4.8 TB/s),
# printed in chapter 4, "Speed on a GPU".
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12}
MASK_BYTES = 1 / 8


def bytes_per_element(element_size: int, backward: str | None) -> float:
    """Floor bytes per element of one pass: ``backward=None`` for the forward, else
    ``"exact"`` or ``"detached"`` for the backward (table above)."""
    s = element_size
    if backward is None:
        return 2 * s + MASK_BYTES
    if backward == "exact":
        return 3 * s + MASK_BYTES
    if backward == "detached":
        return 2 * s + MASK_BYTES
    raise ValueError(f"backward must be None, 'exact' or 'detached', got {backward!r}")


def byte_floor(shape, dtype: torch.dtype, backward: str) -> dict[str, float]:
    """Floor bytes of the forward, the backward (``backward`` mode) and both, for ``x`` of
    ``shape`` and ``dtype``."""
    n = math.prod(shape)
    s = torch.empty((), dtype=dtype).element_size()
    fwd, bwd = n * bytes_per_element(s, None), n * bytes_per_element(s, backward)
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}


def hbm_bandwidth(device_name: str) -> float | None:
    """Peak HBM bytes per second of a device named like ``torch.cuda.get_device_name()``, or
    None when the book records no figure for it (H100 PCIe has less than the SXM part: None)."""
    name = device_name.upper()
    if "H100" in name and ("PCIE" in name or "NVL" in name):
        return None
    return next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)


__all__ = ["HBM_BYTES_PER_S", "MASK_BYTES", "byte_floor", "bytes_per_element", "hbm_bandwidth"]
