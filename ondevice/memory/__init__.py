"""Training memory: measured with autograd's saved-tensor hooks (and, on CUDA, the allocator)."""

from .measure import Measurement, SavedTensor, SavedTensorLog, measure

__all__ = ["Measurement", "SavedTensor", "SavedTensorLog", "measure"]
