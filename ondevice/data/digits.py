"""A small real-image target task: scikit-learn's bundled handwritten digits (chapter 5).

The 1,797 images (10 classes, 174 to 183 per class) are 8 x 8 grey levels 0-16, scanned from
forms written by 43 people (UCI "Optical Recognition of Handwritten Digits"); they ship inside
scikit-learn, so nothing is downloaded. Here they are scaled to [0, 1], upsampled bilinearly to
``resolution`` pixels and repeated over 3 channels, so that the book's RGB networks take them.
They are real images, but tiny ones: a target task far from the synthetic source domain, not a
substitute for Flowers or Cars.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .synthetic import check_int

DIGITS = "digits"


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0
    return images.unsqueeze(1), torch.tensor(data.target, dtype=torch.int64)


def digits_task(n_train: int = 100, n_test: int = 50, resolution: int = 32,
                seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Train and test sets of ``n_train`` and ``n_test`` digits per class, disjoint.

    Each class's images are shuffled with ``seed``, the first ``n_train`` go to training, the
    next ``n_test`` to testing; ``n_train + n_test`` may not exceed 174 (the smallest class).
    Images: float32, (N, 3, resolution, resolution), values in [0, 1]; labels int64 0-9.
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    resolution = check_int("resolution", resolution, 8)
    seed = check_int("seed", seed, 0)
    images, labels = _raw()
    smallest = int(torch.bincount(labels).min())
    if n_train + n_test > smallest:
        raise ValueError(f"n_train + n_test must be at most {smallest} (the smallest digit class), "
                         f"got {n_train} + {n_test}")
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train_idx.append(idx[:n_train])
        test_idx.append(idx[n_train:n_train + n_test])

    def subset(parts):
        idx = torch.cat(parts)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        x = F.interpolate(images[idx], size=(resolution, resolution), mode="bilinear", align_corners=False)
        return TensorDataset(x.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous(), labels[idx])

    return subset(train_idx), subset(test_idx)


__all__ = ["DIGITS", "digits_task"]
