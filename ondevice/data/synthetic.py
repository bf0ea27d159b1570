"""Procedural image-classification tasks for the book's transfer experiments (chapters 2 and 3).

**This is a synthetic stand-in, not a real data set.** The book runs without network access,
so it cannot download ImageNet (for pretraining) or Flowers, Cars, CIFAR (for transfer). Instead
every image is drawn here with torch operations, from a seed, in a fraction of a second: a
coloured *shape* filled with a *texture* on a plain background, placed, scaled and rotated at
random, with a little pixel noise. A class is one (shape, texture) pair; colour, position, size,
rotation and the texture's frequency and phase are nuisances the classifier must ignore.

What it controls, and so what a transfer experiment on it can show:

- **the classes**: a task lists its (shape, texture) pairs. The ``"source"`` task (pretraining)
  uses 6 of the :data:`SHAPES` and 4 of the :data:`TEXTURES`; the target tasks add 2 shapes and
  2 textures that pretraining never showed;
- **the colours** (:data:`PALETTES`): ``"source"`` draws bright, warm-to-green shapes on dark
  backgrounds; ``"target"`` draws dark, cyan-to-magenta shapes on bright backgrounds. The
  palette changes the input statistics without changing what a class is (a covariate shift).

The named tasks (:data:`TASKS`) combine the two: ``"source"``, ``"color_shift"`` (source classes,
target colours), ``"new_classes"`` (new classes, source colours) and ``"target"`` (both shifts).
Conclusions drawn on these tasks are about the mechanisms (what a method can adapt), not about
accuracies on real images: the images are simple and the shift is chosen by us.

- :func:`synthetic_task`: a :class:`~torch.utils.data.TensorDataset` of images
  (float32, N x 3 x r x r, values in [0, 1]) and labels (int64, 0 .. classes - 1), exactly
  ``n_per_class`` images per class, in a seeded random order;

Images are identical for identical arguments within one PyTorch build; the float operations of
different CPUs may differ in the last bits.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from itertools import product
from typing import Union

import torch
from torch.utils.data import TensorDataset

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "star", "crescent")
TEXTURES = ("solid", "hstripes", "vstripes", "checker", "diagonal", "dots")
PALETTES = ("source", "target")

# palette -> (foreground hue range, saturation range, value range, background value range,
#             background saturation range); hues in [0, 1)
_PALETTES = {
    "source": ((0.0, 0.42), (0.6, 1.0), (0.75, 1.0), (0.05, 0.35), (0.0, 0.25)),
    "target": ((0.5, 0.92), (0.6, 1.0), (0.2, 0.5), (0.65, 0.95), (0.0, 0.25)),
}


@dataclass(frozen=True)
class TaskSpec:
    """A synthetic task: its classes, as (shape, texture) pairs, and how it is drawn.

    ``palette``: one of :data:`PALETTES`. ``noise``: standard deviation of the Gaussian pixel
    noise. ``scale``: range of the shape's half-size, as a fraction of the half-image.
    """

    classes: tuple[tuple[str, str], ...]
    palette: str = "source"
    noise: float = 0.03
    scale: tuple[float, float] = (0.55, 0.85)

    def __post_init__(self):
        classes = tuple(tuple(c) for c in self.classes)
        object.__setattr__(self, "classes", classes)
        if not classes:
            raise ValueError("classes must list at least one (shape, texture) pair")
        for c in classes:
            if len(c) != 2 or c[0] not in SHAPES or c[1] not in TEXTURES:
                raise ValueError(f"each class must be a (shape, texture) pair with shape in {SHAPES} "
                                 f"and texture in {TEXTURES}, got {c!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct, got {classes!r}")
        if self.palette not in PALETTES:
            raise ValueError(f"palette must be one of {PALETTES}, got {self.palette!r}")
        if not 0 <= self.noise <= 1:
            raise ValueError(f"noise must be in [0, 1], got {self.noise!r}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {self.scale!r}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [f"{shape}/{texture}" for shape, texture in self.classes]


def _grid(shapes, textures) -> tuple[tuple[str, str], ...]:
    return tuple(product(shapes, textures))


TASKS: dict[str, TaskSpec] = {
    "source": TaskSpec(_grid(SHAPES[:6], TEXTURES[:4]), palette="source"),
    "color_shift": TaskSpec(_grid(SHAPES[:6], TEXTURES[:4]), palette="target"),
    "new_classes": TaskSpec(_grid(SHAPES, TEXTURES[4:]), palette="source"),
    "target": TaskSpec(_grid(SHAPES, TEXTURES[4:]), palette="target"),
}


def task_spec(task: Union[str, TaskSpec]) -> TaskSpec:
    """The :class:`TaskSpec` of a task name in :data:`TASKS`, or ``task`` itself."""
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, str) and task in TASKS:
        return TASKS[task]
    raise ValueError(f"task must be a TaskSpec or one of {tuple(TASKS)}, got {task!r}")


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(n,) hue, saturation, value in [0, 1] -> (n, 3) RGB."""
    out = []
    for k0 in (5.0, 3.0, 1.0):
        k = (k0 + 6.0 * h) % 6.0
        out.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1)


def _shape_mask(name: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-mask of a shape of half-size 1 centred at the origin, on coordinates u, v."""
    r = torch.sqrt(u * u + v * v)
    if name == "circle":
        return r <= 0.9
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.75
    if name == "triangle":  # apex up (v grows downwards in image rows)
        return (v <= 0.7) & (u.abs() <= (v + 0.9) * 0.6)
    if name == "diamond":
        return u.abs() + v.abs() <= 1.0
    if name == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if name == "cross":
        return ((u.abs() <= 0.3) & (v.abs() <= 0.95)) | ((v.abs() <= 0.3) & (u.abs() <= 0.95))
    if name == "star":
        theta = torch.atan2(v, u)
        return r <= 0.55 + 0.4 * torch.cos(5.0 * theta)
    if name == "crescent":
        return (r <= 0.9) & ((u - 0.45) ** 2 + v * v > 0.6**2)
    raise AssertionError(name)


def _texture(name: str, u: torch.Tensor, v: torch.Tensor, freq: torch.Tensor,
             phase: torch.Tensor) -> torch.Tensor:
    """Texture intensity in {0, 1} on the shape's coordinates (it turns with the shape)."""
    a, b = math.pi * freq * u + phase, math.pi * freq * v + phase
    if name == "solid":
        return torch.ones_like(u)
    if name == "hstripes":
        return (torch.sin(b) > 0).float()
    if name == "vstripes":
        return (torch.sin(a) > 0).float()
    if name == "checker":
        return (torch.sin(a) * torch.sin(b) > 0).float()
    if name == "diagonal":
        return (torch.sin((a + b) / math.sqrt(2.0)) > 0).float()
    if name == "dots":
        return (torch.cos(a) + torch.cos(b) > 0.9).float()
    raise AssertionError(name)


def _render(spec: TaskSpec, labels: torch.Tensor, resolution: int, gen: torch.Generator) -> torch.Tensor:
    n = len(labels)
    # every random draw below happens for all n images in a fixed order: deterministic
    cx, cy = _uniform(gen, n, -0.12, 0.12), _uniform(gen, n, -0.12, 0.12)
    size = _uniform(gen, n, *spec.scale)
    angle = _uniform(gen, n, -math.pi / 8, math.pi / 8)
    freq = _uniform(gen, n, 2.0, 3.0)
    phase = _uniform(gen, n, 0.0, 2 * math.pi)
    fg_h, fg_s, fg_v, bg_v, bg_s = _PALETTES[spec.palette]
    fg = _hsv_to_rgb(_uniform(gen, n, *fg_h), _uniform(gen, n, *fg_s), _uniform(gen, n, *fg_v))
    bg = _hsv_to_rgb(torch.rand(n, generator=gen), _uniform(gen, n, *bg_s), _uniform(gen, n, *bg_v))
    images = torch.randn(n, 3, resolution, resolution, generator=gen).mul_(spec.noise)

    line = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 - 1
    y, x = torch.meshgrid(line, line, indexing="ij")
    for c, (shape, texture) in enumerate(spec.classes):  # one class at a time: small tensors
        idx = (labels == c).nonzero().flatten()
        if not len(idx):
            continue
        cos, sin = torch.cos(angle[idx]).view(-1, 1, 1), torch.sin(angle[idx]).view(-1, 1, 1)
        s = size[idx].view(-1, 1, 1)
        dx, dy = x - cx[idx].view(-1, 1, 1), y - cy[idx].view(-1, 1, 1)
        u, v = (dx * cos + dy * sin) / s, (dy * cos - dx * sin) / s
        inside = _shape_mask(shape, u, v).unsqueeze(1)
        pattern = _texture(texture, u, v, freq[idx].view(-1, 1, 1), phase[idx].view(-1, 1, 1))
        # texture 1: the foreground colour; texture 0: halfway between foreground and background
        fore, back = fg[idx].view(-1, 3, 1, 1), bg[idx].view(-1, 3, 1, 1)
        shade = back + (fore - back) * (0.5 + 0.5 * pattern).unsqueeze(1)
        images[idx] += torch.where(inside, shade, back)
    return images.clamp_(0.0, 1.0)


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def synthetic_task(task: Union[str, TaskSpec] = "source", n_per_class: int = 100,
                   resolution: int = 32, seed: int = 0) -> TensorDataset:
    """Draw ``n_per_class`` images of every class of ``task`` (a name in :data:`TASKS` or a
    :class:`TaskSpec`) at ``resolution`` x ``resolution`` pixels.

    Returns a ``TensorDataset(images, labels)``: images float32 of shape
    (classes * n_per_class, 3, resolution, resolution) with values in [0, 1], labels int64 in
    ``range(classes)``, shuffled by ``seed``. The same arguments give identical tensors.
    """
    spec = task_spec(task)
    n_per_class = check_int("n_per_class", n_per_class, 1)
    resolution = check_int("resolution", resolution, 8)
    seed = check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(spec.num_classes).repeat_interleave(n_per_class)
    labels = labels[torch.randperm(len(labels), generator=gen)]
    return TensorDataset(_render(spec, labels, resolution, gen), labels)


__all__ = ["PALETTES", "SHAPES", "TASKS", "TEXTURES", "TaskSpec", "check_int", "synthetic_task",
           "task_spec"]
