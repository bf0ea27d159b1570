"""Training memory, derived and measured (chapter 1, ``book/01_memory``).

- :func:`estimate`: the analytic model (per-layer rules on traced shapes; profiles ``pytorch``
  and ``paper``);
- :func:`memory_curve`: the same as a function of the batch size (for sliders and budgets);
- :func:`measure`: what autograd really saves, via saved-tensor hooks (and CUDA's peak);
- :func:`measure_step`: the allocator's peak over a whole training step, by category (chapter 5).
"""

from .curve import MemoryCurve, memory_curve, step_timeline
from .estimate import FROZEN_BITS, OPTIMIZERS, PROFILES, estimate
from .report import Layer, MemoryReport
from .measure import Measurement, SavedTensor, SavedTensorLog, measure
from .step import CATEGORIES, StepMeasurement, StepOutOfMemory, measure_step
from . import kernel_rules, lean_rules  # noqa: F401  (rules of the fused kernels and the lean twins, chapter 4)

__all__ = ["CATEGORIES", "FROZEN_BITS", "Layer", "Measurement", "MemoryCurve", "MemoryReport", "OPTIMIZERS",
           "PROFILES", "SavedTensor", "SavedTensorLog", "StepMeasurement", "StepOutOfMemory", "estimate", "measure",
           "measure_step", "memory_curve", "step_timeline"]
