"""The bytes that do not depend on what a layer keeps (chapter 1, "Anatomy of a training step"):
the parameters as stored (trainable ones at their dtype, frozen conv and linear weights at a
chosen width with a float32 scale per output channel below 16 bits), their gradients, the
optimizer's state and scratch, and what is alive throughout a step (the input batch)."""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = {"sgd": 0, "momentum": 1, "adam": 2}  # state tensors per trainable parameter
STEP_COUNTER = 4  # bytes: torch's Adam keeps a float32 step count per parameter tensor


def parameters_of(modules: list[nn.Module]) -> tuple[list[nn.Parameter], set[int]]:
    """The distinct parameters of ``modules``, and the ids of those that are conv / linear weights
    (one walk of the module tree serves everything)."""
    seen: dict[int, nn.Parameter] = {}
    weights: set[int] = set()
    for m in modules:
        for name, p in m._parameters.items():
            if p is not None:
                seen.setdefault(id(p), p)
                if name == "weight" and isinstance(m, (nn.Conv2d, nn.Linear)):
                    weights.add(id(p))
    return list(seen.values()), weights


def _frozen_bytes(p: nn.Parameter, is_weight: bool, bits: int, profile: str) -> int:
    """Bytes of a frozen parameter stored at ``bits`` (module docstring; the ``paper`` profile
    charges every frozen value at ``bits``, as TinyTL's profiler does)."""
    if profile == "paper":  # TinyTL's profiler: every frozen value at `bits`
        return p.numel() * bits // 8
    if not (is_weight and p.is_floating_point() and bits < 8 * p.element_size()):
        return p.numel() * p.element_size()  # biases, norm parameters, weights already stored small
    scales = 4 * p.shape[0] if bits < 16 else 0  # one float32 scale per output channel
    return -(-p.numel() * bits // 8) + scales


def parameter_bytes(params: list[nn.Parameter], weights: set[int], frozen_bits: int, optimizer: str,
                    profile: str) -> tuple[int, int, int]:
    """(parameters as stored, their gradients, the optimizer's state) in bytes; ``weights``: the
    ids of conv and linear weights (:func:`parameters_of`)."""
    trainable = frozen = tensors = 0
    for p in params:
        if p.requires_grad:
            trainable += p.numel() * p.element_size()
            tensors += 1
        else:
            frozen += _frozen_bytes(p, id(p) in weights, frozen_bits, profile)
    counters = STEP_COUNTER * tensors if optimizer == "adam" and profile != "paper" else 0
    return trainable + frozen, trainable, trainable * OPTIMIZERS[optimizer] + counters



def step_base(model: nn.Module, params: int, opt: int, shape, dtype: torch.dtype) -> tuple[dict, dict]:
    """What is alive throughout a step, by category: (fixed bytes, bytes per sample)."""
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    sample = math.prod(shape[1:]) * dtype.itemsize + 8  # an image and its int64 label
    return {"parameters": params + buffers, "optimizer state": opt}, {"other": sample}


def optimizer_temporaries(parameters: list[nn.Parameter], optimizer: str) -> int:
    """The update's scratch: torch's Adam (single-tensor, on CPU) makes two temporaries the size of
    the parameter it updates; SGD and momentum update in place."""
    if optimizer != "adam":
        return 0
    return 2 * max((p.numel() * p.element_size() for p in parameters if p.requires_grad), default=0)
