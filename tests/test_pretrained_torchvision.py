"""torchvision checkpoints into the zoo: the committed layout fixture matches the zoo tensor by
tensor, a checkpoint written in torchvision's format loads where each tensor belongs, and
checkpoints of another layout are refused with the file and the keys named."""

import json

import pytest
import torch

from ondevice.pretrained import LAYOUTS, load_torchvision, torchvision_eps, torchvision_layouts, zoo_keys

ARCHS = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet50"]


def test_the_fixture_says_how_it_was_made_and_covers_the_issue_architectures():
    data = json.loads(LAYOUTS.read_text())
    assert data["command"].startswith("pip download torchvision==") and "generate.py" in data["command"]
    assert data["source"]["wheel"].startswith("torchvision-") and len(data["source"]["sha256"]) == 64
    assert list(data["models"]) == ARCHS
    assert torchvision_eps() == {"mobilenet_v2": 1e-5, "mobilenet_v3_large": 1e-3, "mobilenet_v3_small": 1e-3,
                                 "resnet50": 1e-5}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_torchvision_tensor_has_its_zoo_twin(arch):
    pairs = zoo_keys(arch)  # raises unless the suffixes and shapes agree pair by pair
    assert len(pairs) == len(set(pairs.values())) == len(torchvision_layouts()[arch])


def checkpoint(arch, classes=None):
    """A state dict in torchvision's format: every key of the layout, each tensor holding its own index."""
    layout = torchvision_layouts()[arch]
    head = list(layout)[-2:]
    state = {}
    for i, (key, shape) in enumerate(layout.items()):
        if classes is not None and key in head:
            shape = [classes, *shape[1:]]
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        state[key] = torch.full(shape, i, dtype=dtype)
    return state


# torchvision name -> the zoo's, written out by hand from the two definitions (not from the fixture)
BY_HAND = {
    "mobilenet_v2": {"features.0.0.weight": "stem.conv.weight", "features.0.1.running_var": "stem.norm.running_var",
                     "features.1.conv.0.0.weight": "blocks.0.depthwise.conv.weight",
                     "features.2.conv.0.0.weight": "blocks.1.expand.conv.weight",
                     "features.2.conv.2.weight": "blocks.1.project.conv.weight",
                     "features.18.0.weight": "final_conv.conv.weight", "classifier.1.bias": "classifier.1.bias"},
    "mobilenet_v3_large": {"features.4.block.2.fc1.weight": "blocks.3.se.fc1.weight",
                           "features.16.1.bias": "final_conv.norm.bias", "classifier.0.weight": "classifier.0.weight"},
    "resnet50": {"conv1.weight": "stem.0.conv.weight", "bn1.running_mean": "stem.0.norm.running_mean",
                 "layer1.0.downsample.0.weight": "blocks.0.downsample.conv.weight",
                 "layer4.2.bn3.weight": "blocks.15.conv3.norm.weight", "fc.weight": "classifier.0.weight"},
}


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_large", "resnet50"])
def test_a_torchvision_checkpoint_loads_where_each_tensor_belongs(tmp_path, arch):
    state = checkpoint(arch, classes=37)
    file = tmp_path / f"{arch}.pth"
    torch.save(state, file)
    net = load_torchvision(file)  # the architecture is found from the keys
    mine = net.state_dict()
    pairs = zoo_keys(arch)
    assert all(torch.equal(mine[pairs[k]], v) for k, v in state.items())
    for tv, zoo in BY_HAND.get(arch, {}).items():
        assert torch.equal(mine[zoo], state[tv]), (tv, zoo)
    assert net.last_linear.out_features == 37  # the checkpoint's head is kept...
    eps = {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {torchvision_eps()[arch]}
    fresh = load_torchvision(file, arch, num_classes=5)  # ...or replaced for a target task
    assert fresh.last_linear.out_features == 5
    assert torch.equal(fresh.state_dict()[pairs[list(state)[0]]], state[list(state)[0]])


def test_another_layout_is_refused_naming_the_file_and_the_keys(tmp_path):
    state = checkpoint("mobilenet_v2")
    file = tmp_path / "ckpt.pth"
    missing = dict(state)
    del missing["features.3.conv.1.1.weight"]
    torch.save(missing, file)
    with pytest.raises(ValueError, match=r"ckpt.pth.*mobilenet_v2 layout: 1 keys missing \(features.3.conv.1.1.weight\)"):
        load_torchvision(file)
    wrong = {**state, "features.0.0.weight": torch.zeros(16, 3, 3, 3)}
    torch.save(wrong, file)
    with pytest.raises(ValueError, match=r"features.0.0.weight has shape \[16, 3, 3, 3\], torchvision's "
                                         r"mobilenet_v2 has \[32, 3, 3, 3\]"):
        load_torchvision(file)
    torch.save({**state, "extra.weight": torch.zeros(1)}, file)
    with pytest.raises(ValueError, match=r"1 unexpected \(extra.weight\)"):
        load_torchvision(file)
    with pytest.raises(ValueError, match="resnet50 layout"):
        torch.save(state, file)
        load_torchvision(file, "resnet50")
    torch.save([1, 2], file)
    with pytest.raises(ValueError, match="must hold a state dict"):
        load_torchvision(file)
    file.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint .*ckpt.pth"):
        load_torchvision(file)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_torchvision(tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="arch must be one of"):
        load_torchvision(file, "vgg16")
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        load_torchvision(file, num_classes=0)
