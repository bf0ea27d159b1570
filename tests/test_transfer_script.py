"""benchmarks/transfer.py: the real-data recipe (an ImageFolder data set and a checkpoint in
torchvision's format, written here), resuming, and recomputing the memory of recorded runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ondevice.notebook import load_benchmark
from ondevice.pretrained import torchvision_layouts, zoo_keys



@pytest.fixture
def transfer():
    return load_benchmark("transfer")


def torchvision_checkpoint(path: Path, arch: str = "mobilenet_v2") -> Path:
    """A zoo network's random weights saved under torchvision's key names (the reader's file)."""
    from ondevice.models import build

    torch.manual_seed(0)
    mine = build(arch).state_dict()
    torch.save({tv: mine[zoo] for tv, zoo in zoo_keys(arch).items()}, path)
    assert list(torch.load(path, weights_only=True)) == list(torchvision_layouts()[arch])
    return path


def image_folder(root: Path, classes=("daisy", "rose"), per_class=4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (40, 48, 3)) + 120 * c  # the classes differ in brightness
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_real_data_recipe_fine_tunes_a_torchvision_checkpoint(tmp_path, transfer, capsys):
    data = image_folder(tmp_path / "flowers")
    weights = torchvision_checkpoint(tmp_path / "mobilenet_v2.pth")
    out = tmp_path / "out.json"
    args = ["--data", str(data), "--weights", str(weights), "--methods", "FT-Last (BN)", "MobileTL K=2",
            "--seeds", "0", "--epochs", "1", "--resolution", "64", "--out", str(out)]
    transfer.main(args)
    record = json.loads(out.read_text())
    assert record["setup"]["resolution"] == 64 and record["data"]["weights"] == str(weights)
    assert [(r["task"], r["method"]) for r in record["runs"]] == [("flowers", "FT-Last (BN)"), ("flowers", "MobileTL K=2")]
    assert all(r["measured_saved"] == r["saved_activations"]["pytorch"] for r in record["runs"])
    assert record["sessions"][0]["command"].startswith("python ") and record["sessions"][0]["machine"]["cpus"] >= 1
    assert "MobileTL K=2" in capsys.readouterr().out
    transfer.main(args)  # resumes: everything is recorded, nothing runs again
    again = json.loads(out.read_text())
    assert again == record  # the file is left as it was
    with pytest.raises(SystemExit):
        transfer.main(["--data", str(data)])  # --weights missing
    with pytest.raises(SystemExit):
        transfer.main(["--data", str(data), "--weights", str(weights), "--methods", "TinyTL-L+B"])  # a GroupNorm row


def test_defaults_and_refreshing_the_recorded_costs(tmp_path, transfer):
    from ondevice.experiments import TASKS, load

    assert set(TASKS) == {"digits", "new_classes"}
    out = tmp_path / "runs.json"
    transfer.main(["--tasks", "digits", "--methods", "FT-Last", "--seeds", "0", "--epochs", "1", "--n-train", "2",
                   "--n-test", "1", "--resolution", "32", "--out", str(out)])
    runs, setup, facts = load(out)
    tampered = json.loads(out.read_text())
    tampered["runs"][0]["memory"]["paper"] = 1
    out.write_text(json.dumps(tampered))
    transfer.main(["--refresh-costs", "--out", str(out)])
    refreshed, _, facts = load(out)
    assert refreshed == runs and facts["costs_refreshed"]["command"].endswith(f"--refresh-costs --out {out}")
