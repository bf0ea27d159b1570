"""ondevice.train: only trainable tensors change; seeded; learns a trivially learnable task."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ondevice import methods
from ondevice.models import mobilenet_v2
from ondevice.train import evaluate, fit


def loader(n=32, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randn(n, 3, 64, 64, generator=g) * 0.1 + labels.view(-1, 1, 1, 1).float()
    return DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=False)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["ft_last", "tinytl_b", "tinytl_lb"])
def test_frozen_tensors_are_bit_identical_after_training(name):
    torch.manual_seed(0)
    model = methods.apply(mobilenet_v2(num_classes=3), name)
    before = snapshot(model)
    fit(model, loader(), epochs=1, lr=1e-2, progress=False)
    after = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for key, value in before.items():
        if key in trainable:
            continue
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            module = key.rsplit(".", 1)[0]
            if any(n.startswith(module + ".") for n in trainable):
                continue  # a norm that trains updates its statistics too
        assert torch.equal(after[key], value), key
    assert any(not torch.equal(after[k], before[k]) for k in trainable)


def test_training_is_seeded_and_learns():
    def run():
        torch.manual_seed(0)
        model = methods.apply(mobilenet_v2(num_classes=3), "ft_full")
        history = fit(model, loader(), epochs=3, lr=3e-3, seed=1, progress=False)
        return model, history

    (m1, h1), (m2, h2) = run(), run()
    assert h1.loss == h2.loss
    assert h1.loss[-1] < h1.loss[0]
    assert evaluate(m1, loader()) == evaluate(m2, loader())


def test_bad_arguments_are_named():
    model = mobilenet_v2(num_classes=3).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(model, loader(), progress=False)
    model = methods.apply(model, "ft_last")
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        fit(model, loader(), epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        fit(model, loader(), lr=0)


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path):
    def fresh():
        torch.manual_seed(0)
        return methods.apply(mobilenet_v2(num_classes=3), "tinytl_b")

    def shuffled():  # reshuffles every epoch, from its own seeded generator
        return DataLoader(loader().dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))

    def accuracy(model):
        return evaluate(model, loader())

    whole = fresh()
    straight = fit(whole, shuffled(), epochs=3, lr=1e-2, seed=1, progress=False, on_epoch=accuracy)

    class Interrupted(Exception):
        pass

    def crash_in_epoch_2(model):
        if len(calls) == 1:
            raise Interrupted
        calls.append(1)
        return accuracy(model)

    calls, file = [], tmp_path / "ckpt.pt"
    with pytest.raises(Interrupted):  # epoch 1 is saved, epoch 2 is lost
        fit(fresh(), shuffled(), epochs=3, lr=1e-2, seed=1, progress=False, checkpoint=file, on_epoch=crash_in_epoch_2)
    resumed = fresh()
    history = fit(resumed, shuffled(), epochs=3, lr=1e-2, seed=1, progress=False, checkpoint=file, on_epoch=accuracy)
    assert history.loss == straight.loss and history.extra == straight.extra and len(history.extra) == 3
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert history.seconds > 0
    with pytest.raises(ValueError, match="checkpoint .* is of a run of 3 epochs"):
        fit(fresh(), shuffled(), epochs=2, lr=1e-2, progress=False, checkpoint=file)
