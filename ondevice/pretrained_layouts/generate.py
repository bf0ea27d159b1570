"""Write ``torchvision.json``: the state-dict layout (every key, its shape, in order) and the
BatchNorm epsilon of torchvision's MobileNetV2, MobileNetV3-Large / -Small and ResNet-50, read
from torchvision's own model definitions (chapter 5, "Rerun on real data sets"; ``ondevice.pretrained.load_torchvision``).

The book never imports torchvision. This script runs once, by hand, on a torchvision wheel that
pip downloaded (the wheel is not installed and nothing here is committed but the JSON)::

    pip download torchvision==0.28.0 --no-deps -d /tmp/tv
    python ondevice/pretrained_layouts/generate.py /tmp/tv/torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl

It copies the wheel's model files (``models/mobilenetv2.py``, ``mobilenetv3.py``, ``resnet.py``,
their helpers ``models/_api.py``, ``models/_utils.py``, ``ops/misc.py``) into a temporary folder,
replaces the rest of the package (compiled operators, transforms, image metadata, download code)
with empty stand-ins of our own, builds each model on the meta device (no weights, no download)
and records ``model.state_dict()``'s keys and shapes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

REAL = ["models/_api.py", "models/_utils.py", "models/mobilenetv2.py", "models/mobilenetv3.py",
        "models/resnet.py", "ops/misc.py"]
STANDINS = {  # our own minimal modules for what the real files import but do not need here
    "__init__.py": "",
    "models/__init__.py": "",
    "ops/__init__.py": "",
    "transforms/__init__.py": "",
    "transforms/_presets.py": "class ImageClassification:\n    def __init__(self, *args, **kwargs):\n        pass\n",
    "models/_meta.py": "_IMAGENET_CATEGORIES = []\n",
    "_internally_replaced_utils.py": "def load_state_dict_from_url(*args, **kwargs):\n"
                                     "    raise RuntimeError('no downloads here')\n",
    "_utils.py": "def sequence_to_str(seq, separate_last=''):\n    return ', '.join(map(str, seq))\n",
    "utils.py": "import collections.abc, itertools\n\n"
                "def _log_api_usage_once(obj):\n    pass\n\n"
                "def _make_ntuple(x, n):\n"
                "    return tuple(x) if isinstance(x, collections.abc.Iterable) else tuple(itertools.repeat(x, n))\n",
}
MODELS = {"mobilenet_v2": "mobilenetv2", "mobilenet_v3_large": "mobilenetv3",
          "mobilenet_v3_small": "mobilenetv3", "resnet50": "resnet"}
OUT = Path(__file__).resolve().parent / "torchvision.json"


def layouts(wheel: Path) -> tuple[dict, dict]:
    """(architecture -> {key: shape}, architecture -> BatchNorm epsilon) from the wheel's sources."""
    import importlib

    import torch

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as archive:
        package = Path(tmp) / "torchvision"
        for name in REAL:
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_bytes(archive.read(f"torchvision/{name}"))
        for name, text in STANDINS.items():
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_text(text)
        sys.path.insert(0, tmp)
        try:
            keys, eps = {}, {}
            for model, module in MODELS.items():
                build = getattr(importlib.import_module(f"torchvision.models.{module}"), model)
                with torch.device("meta"):
                    net = build(weights=None)
                keys[model] = {key: list(t.shape) for key, t in net.state_dict().items()}
                values = {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
                assert len(values) == 1, (model, values)  # one epsilon per architecture
                eps[model] = values.pop()
            return keys, eps
        finally:
            sys.path.remove(tmp)
            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].endswith(".whl"):
        raise SystemExit("usage: python ondevice/pretrained_layouts/generate.py TORCHVISION_WHEEL.whl")
    wheel = Path(args[0])
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    keys, eps = layouts(wheel)
    data = {"what": "torchvision state-dict layouts: key -> shape, in state_dict() order",
            "source": {"wheel": wheel.name, "sha256": digest, "files": REAL},
            "command": f"pip download torchvision=={wheel.name.split('-')[1]} --no-deps -d /tmp/tv && "
                       f"python ondevice/pretrained_layouts/generate.py /tmp/tv/{wheel.name}",
            "batchnorm_eps": eps, "models": keys}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT}: " + ", ".join(f"{m} {len(keys)} keys" for m, keys in data["models"].items()))


if __name__ == "__main__":
    main()
