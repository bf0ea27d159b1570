"""Real data sets on disk, in the ImageFolder layout (``root/class_x/*.jpg``; chapter 5).

The book downloads nothing. A reader who has Flowers102, Oxford Pets, CIFAR-10 (as image files)
or their own photos on disk can run the same experiments on them: one folder per class, image
files inside. Either ``root/<class>/...`` (split here, per class, by a seed) or
``root/train/<class>/...`` with ``root/test/<class>/...`` (or ``val``), the split given.

Images are read with Pillow, converted to RGB, resized so that the shorter side is
``resolution`` and centre-cropped to ``resolution`` x ``resolution``; tensors are float32 in
[0, 1], as the synthetic tasks'. Problems with the layout are reported when the folder is
opened, naming the folder; an image that cannot be read is reported when it is loaded, naming
the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .synthetic import check_int

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")
SPLITS = ("train", ("test", "val"))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolder(Dataset):
    """Images under ``root/<class>/``, labelled by their class folder (classes in sorted order).

    ``classes``: the class names to expect, in label order (to make a test split use the
    training split's labels); by default the sorted folder names.
    """

    def __init__(self, root: Union[str, Path], resolution: int = 32, classes: list[str] | None = None):
        self.root = Path(root)
        self.resolution = check_int("resolution", resolution, 8)
        if not self.root.exists():
            raise FileNotFoundError(f"root {str(self.root)!r} does not exist (expected root/<class>/<image>)")
        if not self.root.is_dir():
            raise NotADirectoryError(f"root {str(self.root)!r} is not a folder (expected root/<class>/<image>)")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not found:
            loose = _images(self.root)
            hint = f"; it holds {len(loose)} images directly: move them into one folder per class" if loose else ""
            raise ValueError(f"root {str(self.root)!r} has no class folders (expected root/<class>/<image>){hint}")
        if classes is not None and sorted(classes) != found:
            raise ValueError(f"the class folders of {str(self.root)!r} are {found}, expected {sorted(classes)} "
                             f"(the classes of the other split)")
        self.classes = list(classes) if classes is not None else found
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = _images(self.root / name)
            if not files:
                raise ValueError(f"class folder {str(self.root / name)!r} holds no images "
                                 f"(accepted suffixes: {', '.join(IMAGE_SUFFIXES)})")
            self.samples += [(f, label) for f in files]
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.resolution), label


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """One image as float32 (3, resolution, resolution) in [0, 1]: shorter side resized to
    ``resolution`` (bilinear), then centre-cropped. 8-bit images are divided by 255; 16-bit
    grey levels (Pillow's modes ``I;16*`` and ``I``, e.g. 16-bit PNG or TIFF) by 65535; float
    images (mode ``F``) are taken as they are; values are clipped to [0, 1]. Grey images are
    repeated over the 3 channels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img, white = _full_range(img)
            w, h = img.size
            scale = resolution / min(w, h)
            size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
            img = img.resize(size, Image.Resampling.BILINEAR)
            left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            array = np.asarray(img, dtype=np.float32) / white
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {str(path)!r}: {error}") from None
    if array.ndim == 2:  # one grey plane
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).clamp_(0.0, 1.0)


def _full_range(img):
    """(an image Pillow resizes without losing its range, the value of white in it): a 16-bit or
    float grey image as one float plane (converting it to RGB would clip it to 8 bits: a 16-bit
    value of 60000 would read as white), anything else as 8-bit RGB."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        white = 1.0 if img.mode == "F" else 65535.0
        return Image.fromarray(np.asarray(img, dtype=np.float32)), white
    return img.convert("RGB"), 255.0


def _split_folder(root: Path) -> tuple[Path, Path] | None:
    train = root / SPLITS[0]
    tests = [root / name for name in SPLITS[1] if (root / name).is_dir()]
    return (train, tests[0]) if train.is_dir() and tests else None


def folder_datasets(root: Union[str, Path], resolution: int = 32, test_fraction: float = 0.2,
                    seed: int = 0) -> tuple[Dataset, Dataset, list[str]]:
    """Train set, test set and class names of the data set at ``root`` (layouts: module doc).

    Without a given split, each class's images are shuffled with ``seed`` and ``test_fraction``
    of them (at least one) go to the test set; a class needs at least two images.
    """
    root = Path(root)
    seed = check_int("seed", seed, 0)
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    split = _split_folder(root) if root.is_dir() else None
    if split:
        train = ImageFolder(split[0], resolution)
        return train, ImageFolder(split[1], resolution, classes=train.classes), train.classes
    data = ImageFolder(root, resolution)
    gen = torch.Generator().manual_seed(seed)
    targets = torch.tensor(data.targets)
    train_idx, test_idx = [], []
    for label, name in enumerate(data.classes):
        idx = (targets == label).nonzero().flatten()
        if len(idx) < 2:
            raise ValueError(f"class folder {str(root / name)!r} needs at least 2 images to be split "
                             f"into train and test, has {len(idx)}")
        idx = idx[torch.randperm(len(idx), generator=gen)].tolist()
        n_test = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test_idx += idx[:n_test]
        train_idx += idx[n_test:]
    return Subset(data, sorted(train_idx)), Subset(data, sorted(test_idx)), data.classes


def folder_loaders(root: Union[str, Path], *, resolution: int = 32, batch_size: int = 8,
                   test_fraction: float = 0.2, seed: int = 0, test_batch_size: int = 64,
                   num_workers: int = 0):
    """Train and test :class:`~torch.utils.data.DataLoader` objects of the data set at ``root``
    (as :func:`ondevice.data.loaders` gives for the built-in tasks), and its class names."""
    from torch.utils.data import DataLoader

    for name, value in (("batch_size", batch_size), ("test_batch_size", test_batch_size)):
        check_int(name, value, 1)
    check_int("num_workers", num_workers, 0)
    train, test, classes = folder_datasets(root, resolution, test_fraction, seed)
    shuffle = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=shuffle, num_workers=num_workers),
            DataLoader(test, batch_size=test_batch_size, shuffle=False, num_workers=num_workers),
            classes)


__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "folder_datasets", "folder_loaders", "load_image"]
