"""The pretrained backbones the book ships (chapter 5, "Memory versus accuracy").

Nothing may be downloaded, so there are no ImageNet weights. Instead ``benchmarks/pretrain.py``
trains two copies of :func:`~ondevice.models.proxylessnas_tiny` (ProxylessNAS-Mobile's stages, two
blocks each, at width 0.35, 32 px inputs) on the synthetic ``"source"`` task of
:mod:`ondevice.data`, seeded, on a CPU, and commits the weights under ``ondevice/weights/``
with a manifest (``manifest.json``) that records the command, time, accuracy and a SHA-256 of
every file:

- ``"proxylessnas_tiny-gn-lite"``: as TinyTL pretrains its backbone (§3.3 of the paper):
  GroupNorm + weight standardization, then lite residual branches inserted and trained on the
  source task with the backbone frozen. For FT-*, TinyTL-B/L/L+B.
- ``"proxylessnas_tiny-bn"``: the same network with BatchNorm and no branches, as MobileTL
  (AAAI 2023) fine-tunes MobileNets: its shift-only norms need BatchNorm's running statistics.

:func:`load_pretrained` verifies the checksum before it loads anything: a damaged or replaced
file gives an error that names it, never silently different weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from .lite_residual import add_lite_residuals
from .models import proxylessnas_tiny, to_groupnorm

WEIGHTS = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS / "manifest.json"


def build_backbone(config: dict) -> nn.Module:
    """The untrained network a manifest entry describes (``width_mult``, ``last_channels``,
    ``num_classes``, ``norm`` "bn" or "gn", ``lite`` whether lite residual branches are in)."""
    net = proxylessnas_tiny(num_classes=config["num_classes"], width_mult=config["width_mult"],
                            last_channels=config["last_channels"])
    if config["norm"] not in ("bn", "gn"):
        raise ValueError(f"norm must be 'bn' or 'gn', got {config['norm']!r}")
    if config["lite"]:
        add_lite_residuals(net)
    return to_groupnorm(net) if config["norm"] == "gn" else net


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(path: Path = MANIFEST) -> dict:
    """The manifest: backbone name -> its configuration, file, checksum and training record."""
    if not path.exists():
        raise FileNotFoundError(f"no pretrained backbones: {path} is missing (run benchmarks/pretrain.py)")
    return json.loads(path.read_text())


def names(path: Path = MANIFEST) -> list[str]:
    return list(manifest(path))


def load_pretrained(name: str, num_classes: int | None = None, *, path: Path = MANIFEST) -> nn.Module:
    """The backbone ``name`` (see :func:`names`) with its pretrained weights, checksum verified.

    ``num_classes``: give the classifier a fresh output layer for a target task (transfer);
    ``None`` keeps the source task's classifier.
    """
    entries = manifest(path)
    if name not in entries:
        raise ValueError(f"name must be one of {list(entries)}, got {name!r}")
    entry = entries[name]
    file = path.parent / entry["file"]
    if not file.exists():
        raise FileNotFoundError(f"weights of {name!r} are missing: {file}")
    actual = sha256(file)
    if actual != entry["sha256"]:
        raise ValueError(f"checksum mismatch for {file}: expected sha256 {entry['sha256']}, got {actual}; "
                         f"the file is damaged or was replaced (rerun benchmarks/pretrain.py)")
    net = build_backbone(entry["config"])
    net.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    if num_classes is not None:
        net.reset_classifier(num_classes)
    return net


__all__ = ["MANIFEST", "WEIGHTS", "build_backbone", "load_pretrained", "manifest", "names", "sha256"]
