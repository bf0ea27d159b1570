"""Data for the book's transfer experiments, all of it available offline (chapters 2, 3 and 5).

- :mod:`.synthetic`: procedural shape-and-texture tasks drawn from a seed (the source domain
  for pretraining and several controlled target shifts);
- :mod:`.digits`: scikit-learn's bundled 8x8 handwritten digits, a small *real-image* target;
- :mod:`.folder`: any data set on disk in the ImageFolder layout (``root/class_x/*.jpg``), for
  readers who have Flowers102, Pets or CIFAR images.

:func:`loaders` gives train and test loaders of the synthetic tasks and of ``"digits"``;
:func:`folder_loaders` of a folder.
"""

from __future__ import annotations

from typing import Union

from torch.utils.data import DataLoader

from .digits import DIGITS, digits_task
from .folder import IMAGE_SUFFIXES, ImageFolder, folder_datasets, folder_loaders
from .synthetic import (PALETTES, SHAPES, TASKS, TEXTURES, TaskSpec, check_int, synthetic_task,
                        task_spec)

TASK_NAMES = (*TASKS, DIGITS)


def loaders(task: Union[str, TaskSpec] = "source", *, n_train: int = 100, n_test: int = 50,
            resolution: int = 32, batch_size: int = 32, seed: int = 0,
            test_batch_size: int = 256) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders of ``task`` (a name in :data:`TASK_NAMES` or a :class:`TaskSpec`):
    ``n_train`` and ``n_test`` images per class.

    The two sets share no image: synthetic ones are drawn with different seeds (derived from
    ``seed``), the digits are split without overlap. The training loader reshuffles every epoch
    with its own generator seeded by ``seed`` (the order is reproducible); the test loader keeps
    a fixed order. Training drops no batch.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("batch_size", batch_size),
                        ("test_batch_size", test_batch_size)):
        check_int(name, value, 1)
    seed = check_int("seed", seed, 0)
    if isinstance(task, str) and task not in TASK_NAMES:
        raise ValueError(f"task must be a TaskSpec or one of {TASK_NAMES}, got {task!r}")
    if task == DIGITS:
        train, test = digits_task(n_train, n_test, resolution, seed=seed)
    else:
        train = synthetic_task(task, n_train, resolution, seed=2 * seed)
        test = synthetic_task(task, n_test, resolution, seed=2 * seed + 1)
    return _loaders(train, test, batch_size, test_batch_size, seed)


def _loaders(train, test, batch_size: int, test_batch_size: int, seed: int):
    import torch

    shuffle = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=shuffle),
            DataLoader(test, batch_size=test_batch_size, shuffle=False))


__all__ = ["DIGITS", "IMAGE_SUFFIXES", "ImageFolder", "PALETTES", "SHAPES", "TASKS", "TASK_NAMES",
           "TEXTURES", "TaskSpec", "digits_task", "folder_datasets", "folder_loaders", "loaders", "synthetic_task",
           "task_spec"]
