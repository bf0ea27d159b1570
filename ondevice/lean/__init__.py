"""Memory-lean twins of stock layers, and :func:`kernelize`, which puts them into a network
(chapter 4, "Putting the kernels in a network").

- :mod:`.frozen`: frozen convs and linears that keep nothing (32-bit or int8 weights);
- :mod:`.ws_conv`: a trainable weight-standardized conv that keeps only its input;
- :mod:`.norms`: lone GroupNorm / BatchNorm and BatchNorm + activation that keep only what their
  backward needs (GroupNorm + activation is :class:`kernels.GroupNormAct`);
- :mod:`.pools`: average pooling that keeps nothing, max pooling that keeps a 1-byte argmax;
- :mod:`.kernelize`: the model surgery, with its report.

The memory engine knows every twin (``ondevice/memory/lean_rules.py``), and its ``masked``
profile is, by definition, what :func:`kernelize` makes a model keep.
"""

from .frozen import FrozenConv2d, FrozenLinear, dequantize, quantize
from .kernelize import KernelizeReport, kernelize, kernelize_report
from .norms import BatchNormAct, LeanBatchNorm2d, LeanGroupNorm
from .pools import LeanAvgPool2d, LeanMaxPool2d
from .ws_conv import LeanWSConv2d

__all__ = ["BatchNormAct", "FrozenConv2d", "FrozenLinear", "KernelizeReport", "LeanAvgPool2d",
           "LeanBatchNorm2d", "LeanGroupNorm", "LeanMaxPool2d", "LeanWSConv2d", "dequantize", "kernelize",
           "kernelize_report", "quantize"]
