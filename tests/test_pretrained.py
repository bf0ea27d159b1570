"""The shipped backbones: checksums verified on load, sizes within budget, source accuracy as recorded."""

import json
import shutil

import pytest
import torch

from ondevice.data import TASKS, loaders
from ondevice.pretrained import MANIFEST, WEIGHTS, build_backbone, load_pretrained, manifest, names
from ondevice.train import evaluate


def test_shipped_weights_are_small_and_listed():
    entries = manifest()
    assert set(names()) == {"proxylessnas_tiny-gn-lite", "proxylessnas_tiny-bn"}
    files = [WEIGHTS / e["file"] for e in entries.values()]
    assert all(f.exists() for f in files) and sum(f.stat().st_size for f in files) <= 10e6


@pytest.mark.parametrize("name", ["proxylessnas_tiny-gn-lite", "proxylessnas_tiny-bn"])
def test_loads_with_its_recorded_source_accuracy(name):
    entry = manifest()[name]
    model = load_pretrained(name)
    _, test = loaders("source", n_train=1, n_test=50, resolution=entry["config"]["resolution"],
                      seed=0)  # the pretraining script's test set (seed 0)
    accuracy = evaluate(model, test)
    assert accuracy == pytest.approx(entry["training"]["source_accuracy"], abs=0.01)
    assert accuracy > 5 / TASKS["source"].num_classes  # far above chance: it learned
    head = load_pretrained(name, num_classes=7)
    body = {k: v for k, v in head.state_dict().items() if "classifier" not in k}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())
    assert head(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_a_damaged_file_is_refused_by_its_checksum(tmp_path):
    for f in [MANIFEST, *(WEIGHTS / e["file"] for e in manifest().values())]:
        shutil.copy(f, tmp_path / f.name)
    name = "proxylessnas_tiny-bn"
    target = tmp_path / manifest()[name]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch for .*proxylessnas_tiny-bn.pt"):
        load_pretrained(name, path=tmp_path / MANIFEST.name)
    target.unlink()
    with pytest.raises(FileNotFoundError, match="weights of 'proxylessnas_tiny-bn' are missing"):
        load_pretrained(name, path=tmp_path / MANIFEST.name)
    with pytest.raises(ValueError, match="name must be one of"):
        load_pretrained("resnet", path=tmp_path / MANIFEST.name)


def test_backbone_configuration_is_checked():
    config = json.loads(MANIFEST.read_text())["proxylessnas_tiny-bn"]["config"]
    with pytest.raises(ValueError, match="norm must be 'bn' or 'gn'"):
        build_backbone({**config, "norm": "ln"})


def test_pretrain_script_runs_quickly(tmp_path, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "pretrain.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as when run as a script: `import common`
    spec = importlib.util.spec_from_file_location("pretrain", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr("tempfile.mkdtemp", lambda prefix="": str(tmp_path))
    module.main(["--quick"])
    written = json.loads((tmp_path / "manifest.json").read_text())
    for name in written:  # the quick run's weights load through the same checked path
        assert load_pretrained(name, path=tmp_path / "manifest.json") is not None
    assert "not recorded" in capsys.readouterr().out
