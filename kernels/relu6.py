"""The primer's first Triton kernel: ReLU6, y = min(max(x, 0), 6), elementwise.

Chapter 0 ("How memory is measured") runs it under Triton's interpreter on CPU and checks it
against :func:`torch.nn.functional.relu6`. Forward only: the masked activations with a
backward live in the kernels chapter. ``relu6_reference`` is its plain-torch twin.
"""

from __future__ import annotations

import torch

from .runtime import choose_backend, launch

try:  # Triton is optional at import time: the torch twin works without it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None


def relu6_reference(x: torch.Tensor) -> torch.Tensor:
    """Plain-torch twin of :func:`relu6`: same values, NaN stays NaN."""
    return torch.nn.functional.relu6(x)


if triton is not None:

    @triton.jit
    def _relu6_kernel(
        x_ptr,  # input, flattened
        y_ptr,  # out, like x
        n_elements,  # elements of x
        BLOCK: tl.constexpr,  # elements per program
    ):
        # One program handles BLOCK consecutive elements; the mask guards the ragged tail.
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < n_elements
        x = tl.load(x_ptr + offsets, mask=inside)
        # Comparisons with NaN are false, so NaN passes through unchanged, as in torch.
        y = tl.where(x < 0.0, 0.0, tl.where(x > 6.0, 6.0, x))
        tl.store(y_ptr + offsets, y.to(x.dtype), mask=inside)


def relu6(x: torch.Tensor, *, block: int = 1024, backend: str | None = None) -> torch.Tensor:
    """ReLU6 of ``x`` computed by a Triton kernel (or its torch twin, see ``backend``).

    ``block`` is the number of elements per Triton program (a power of two).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if block <= 0 or block & (block - 1):
        raise ValueError(f"block must be a positive power of two, got {block}")
    if choose_backend(x, backend) == "torch":
        return relu6_reference(x)
    x_flat = x.contiguous().view(-1)
    y = torch.empty_like(x_flat)
    n = x_flat.numel()
    if n:
        launch(_relu6_kernel, (triton.cdiv(n, block),), x_flat, y, n, BLOCK=block, num_warps=4)
    return y.view(x.shape)
