"""The shipped backbones: checksums verified on load, sizes within budget, source accuracy as
recorded and at least 90%; bad names, class counts and manifests are refused with the file named."""

import json
import shutil

import pytest
import torch

from ondevice.data import TASKS, loaders
from ondevice.notebook import load_benchmark
from ondevice.pretrained import MANIFEST, WEIGHTS, build_backbone, load_pretrained, manifest, names
from ondevice.train import evaluate

SHIPPED = ["proxylessnas_tiny-gn-lite", "proxylessnas_tiny-bn"]


def test_shipped_weights_are_small_and_listed():
    entries = manifest()
    assert set(names()) == set(SHIPPED)
    files = [WEIGHTS / e["file"] for e in entries.values()]
    assert all(f.exists() for f in files) and sum(f.stat().st_size for f in files) <= 10e6


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_with_its_recorded_source_accuracy(name):
    entry = manifest()[name]
    model = load_pretrained(name)
    resolution = entry["config"]["resolution"]
    _, test = loaders("source", n_train=1, n_test=50, resolution=resolution,
                      seed=0)  # the pretraining script's test set (seed 0, 50 per class)
    accuracy = evaluate(model, test)
    assert accuracy == pytest.approx(entry["training"]["source_accuracy"], abs=0.01)
    assert accuracy >= 0.9 > 1 / TASKS["source"].num_classes  # the bar: good at its source task
    head = load_pretrained(name, num_classes=7)
    body = {k: v for k, v in head.state_dict().items() if "classifier" not in k}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())
    assert head(torch.rand(2, 3, 32, 32)).shape == (2, 7)  # total stride 16: 32 px inputs still run


def _copy(tmp_path):
    for f in [MANIFEST, *(WEIGHTS / e["file"] for e in manifest().values())]:
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / MANIFEST.name


def test_a_damaged_file_is_refused_by_its_checksum(tmp_path):
    path = _copy(tmp_path)
    name = "proxylessnas_tiny-bn"
    target = tmp_path / manifest()[name]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch for .*proxylessnas_tiny-bn.pt"):
        load_pretrained(name, path=path)
    target.unlink()
    with pytest.raises(FileNotFoundError, match="weights of 'proxylessnas_tiny-bn' are missing"):
        load_pretrained(name, path=path)
    with pytest.raises(ValueError, match="name must be one of"):
        load_pretrained("resnet", path=path)


def test_a_corrupt_manifest_or_an_entry_without_checksum_names_the_file(tmp_path):
    path = _copy(tmp_path)
    entries = json.loads(path.read_text())
    del entries["proxylessnas_tiny-bn"]["sha256"]
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=f"manifest {path}: entry 'proxylessnas_tiny-bn' has no sha256"):
        load_pretrained("proxylessnas_tiny-gn-lite", path=path)
    path.write_text(json.dumps(entries)[:-20])  # cut short
    with pytest.raises(ValueError, match=f"manifest {path} is not valid JSON"):
        load_pretrained("proxylessnas_tiny-bn", path=path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"manifest {path} must map backbone names"):
        names(path)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_num_classes_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=f"num_classes must be an int >= 1 or None, got {bad!r}"):
        load_pretrained("proxylessnas_tiny-bn", num_classes=bad)


def test_backbone_configuration_is_checked():
    config = json.loads(MANIFEST.read_text())["proxylessnas_tiny-bn"]["config"]
    with pytest.raises(ValueError, match="norm must be 'bn' or 'gn'"):
        build_backbone({**config, "norm": "ln"})


def test_pretraining_is_recorded_with_command_time_and_curves():
    from ondevice.experiments import RECORDED

    record = json.loads((RECORDED.parent / "pretrain.json").read_text())
    for name in SHIPPED:
        shipped = manifest()[name]["training"]
        assert record["backbones"][name] == shipped  # the manifest and the record describe the same run
        assert shipped["command"].startswith("python benchmarks/pretrain.py") and shipped["seconds"] > 0
        curve = record["curves"][name]["backbone"]
        assert len(curve["loss"]) == len(curve["source_accuracy"]) == shipped["backbone_epochs"]
        assert curve["source_accuracy"][-1] == shipped["backbone_source_accuracy"]
    assert "lite" in record["curves"]["proxylessnas_tiny-gn-lite"] and record["machine"]["cpus"] >= 1


def test_pretrain_script_runs_quickly(tmp_path, monkeypatch, capsys):
    module = load_benchmark("pretrain")
    monkeypatch.setattr("tempfile.mkdtemp", lambda prefix="": str(tmp_path))
    module.main(["--quick"])
    written = json.loads((tmp_path / "manifest.json").read_text())
    for name in written:  # the quick run's weights load through the same checked path
        assert load_pretrained(name, path=tmp_path / "manifest.json") is not None
    assert "not recorded" in capsys.readouterr().out
