"""Pretrained backbones: the two the book ships, and torchvision checkpoints a reader has on disk
(chapter 5, "Memory versus accuracy").

**Shipped.** Nothing may be downloaded, so there are no ImageNet weights. Instead
``benchmarks/pretrain.py`` trains two copies of :func:`~ondevice.models.proxylessnas_tiny`
(ProxylessNAS-Mobile's stages, two blocks each, width 0.35, total stride 16) on the synthetic
``"source"`` task of :mod:`ondevice.data` at 96 px, seeded, on a CPU, and commits the weights under
``ondevice/weights/`` with a manifest (``manifest.json``) that records the command, time, source
accuracy and a SHA-256 of every file:

- ``"proxylessnas_tiny-gn-lite"``: as TinyTL pretrains its backbone (§3.3 of the paper):
  GroupNorm + weight standardization, then lite residual branches inserted and trained on the
  source task with the backbone frozen. For FT-*, TinyTL-B/L/L+B.
- ``"proxylessnas_tiny-bn"``: the same network with BatchNorm and no branches, as MobileTL
  (AAAI 2023) fine-tunes MobileNets: its shift-only norms need BatchNorm's running statistics.

:func:`load_pretrained` verifies the checksum before it loads anything: a damaged or replaced
file gives an error that names it, never silently different weights.

**torchvision checkpoints.** :func:`load_torchvision` reads a state dict saved from torchvision's
MobileNetV2, MobileNetV3-Large / -Small or ResNet-50 (for example ImageNet weights a reader
downloaded once) into the zoo's network of the same architecture. The key names and shapes are
checked against ``pretrained_layouts/torchvision.json``, generated from torchvision's own model
code by ``pretrained_layouts/generate.py`` (the command is in the file); torchvision itself is
never imported. The two layouts list the same tensors in the same order, so the i-th key of one
is the i-th of the other; the pairing is checked name suffix by name suffix and shape by shape.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from pathlib import Path

import torch
from torch import nn

from .lite_residual import add_lite_residuals
from .models import build, proxylessnas_tiny, to_groupnorm

WEIGHTS = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS / "manifest.json"
LAYOUTS = Path(__file__).resolve().parent / "pretrained_layouts" / "torchvision.json"
ENTRY_KEYS = ("file", "sha256", "config")


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
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no pretrained backbones: {path} is missing (run benchmarks/pretrain.py)")
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"manifest {path} is not valid JSON ({error}); restore it or rerun "
                         f"benchmarks/pretrain.py") from None
    if not isinstance(entries, dict):
        raise ValueError(f"manifest {path} must map backbone names to entries, got a {type(entries).__name__}")
    for name, entry in entries.items():
        missing = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"manifest {path}: entry {name!r} has no {', '.join(missing)} "
                             f"(every entry needs {', '.join(ENTRY_KEYS)})")
    return entries


def names(path: Path = MANIFEST) -> list[str]:
    return list(manifest(path))


def check_classes(num_classes) -> int | None:
    """``num_classes`` if it is None or an int >= 1, else a ValueError naming it."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}")
    return int(num_classes)


def load_pretrained(name: str, num_classes: int | None = None, *, path: Path = MANIFEST) -> nn.Module:
    """The backbone ``name`` (see :func:`names`) with its pretrained weights, checksum verified.

    ``num_classes``: give the classifier a fresh output layer for a target task (transfer);
    ``None`` keeps the source task's classifier.
    """
    num_classes = check_classes(num_classes)
    path = Path(path)
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


def torchvision_layouts(path: Path = LAYOUTS) -> dict[str, dict[str, list[int]]]:
    """Architecture name (a zoo name) -> torchvision's state-dict keys and shapes, in order."""
    return json.loads(Path(path).read_text())["models"]


def torchvision_eps(path: Path = LAYOUTS) -> dict[str, float]:
    """BatchNorm's epsilon in torchvision's definition of each architecture (not in the state dict)."""
    return json.loads(Path(path).read_text())["batchnorm_eps"]


def _head(layout: dict) -> tuple[str, str]:
    """The keys of the output layer's weight and bias: the last two of the layout."""
    weight, bias = list(layout)[-2:]
    return weight, bias


def _read_state_dict(file: Path) -> dict:
    if not file.exists():
        raise FileNotFoundError(f"checkpoint {str(file)!r} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike: the file is not a checkpoint
        raise ValueError(f"cannot read checkpoint {str(file)!r}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint that wraps the weights
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"checkpoint {str(file)!r} must hold a state dict (parameter name -> tensor)")
    return state


def _mismatch(file: Path, arch: str, layout: dict, state: dict) -> str | None:
    """Why ``state`` is not ``arch``'s layout (None if it is); the head may have any class count."""
    missing = [k for k in layout if k not in state]
    extra = [k for k in state if k not in layout]
    if missing or extra:
        return (f"checkpoint {str(file)!r} does not have torchvision's {arch} layout: "
                f"{len(missing)} keys missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), "
                f"{len(extra)} unexpected ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
    head = _head(layout)
    for key, shape in layout.items():
        got = list(state[key].shape)
        if got != shape and not (key in head and got[1:] == shape[1:]):
            return f"checkpoint {str(file)!r}: {key} has shape {got}, torchvision's {arch} has {shape}"
    return None


def load_torchvision(file: str | Path, arch: str | None = None, num_classes: int | None = None, *,
                     layouts: Path = LAYOUTS) -> nn.Module:
    """The zoo's ``arch`` network with the weights of the torchvision checkpoint ``file`` (module
    docstring). ``arch``: one of the layouts' names, or None to find the one whose keys the
    checkpoint has. The output layer keeps the checkpoint's class count; ``num_classes`` gives it
    a fresh one for a target task. BatchNorm's epsilon is set as torchvision defines it."""
    num_classes = check_classes(num_classes)
    file = Path(file)
    known = torchvision_layouts(layouts)
    if arch is not None and arch not in known:
        raise ValueError(f"arch must be one of {list(known)} or None, got {arch!r}")
    state = _read_state_dict(file)
    candidates = [arch] if arch is not None else [a for a in known if set(known[a]) == set(state)]
    if not candidates:
        closest = min(known, key=lambda a: len(set(known[a]) ^ set(state)))
        raise ValueError(_mismatch(file, closest, known[closest], state) + f" (nor any of {list(known)})")
    arch = candidates[0]
    layout = known[arch]
    problem = _mismatch(file, arch, layout, state)
    if problem:
        raise ValueError(problem)
    net = build(arch, num_classes=state[_head(layout)[0]].shape[0])
    eps = torchvision_eps(layouts)[arch]
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
    pairs = zoo_keys(arch, layouts)
    net.load_state_dict({pairs[k]: state[k] for k in layout})
    if num_classes is not None:
        net.reset_classifier(num_classes)
    return net


def zoo_keys(arch: str, layouts: Path = LAYOUTS) -> dict[str, str]:
    """torchvision key -> the zoo's key of the same tensor, checked (suffix and shape) pair by pair."""
    layout = torchvision_layouts(layouts)[arch]
    with torch.device("meta"):
        zoo = build(arch).state_dict()
    if len(zoo) != len(layout):
        raise AssertionError(f"{arch}: the zoo has {len(zoo)} tensors, torchvision {len(layout)}")
    pairs = dict(zip(layout, zoo))
    for tv, mine in pairs.items():
        if tv.rsplit(".", 1)[-1] != mine.rsplit(".", 1)[-1] or layout[tv] != list(zoo[mine].shape):
            raise AssertionError(f"{arch}: torchvision's {tv} {layout[tv]} pairs with the zoo's {mine} "
                                 f"{list(zoo[mine].shape)}")
    return pairs


__all__ = ["LAYOUTS", "MANIFEST", "WEIGHTS", "build_backbone", "check_classes", "load_pretrained", "load_torchvision",
           "manifest", "names", "sha256", "torchvision_eps", "torchvision_layouts", "zoo_keys"]
