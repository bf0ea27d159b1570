"""ondevice.data: the synthetic stand-in tasks are deterministic, balanced and really shifted."""

import pytest
import torch

from ondevice.data import PALETTES, SHAPES, TASKS, TEXTURES, TaskSpec, loaders, synthetic_task, task_spec


def border(images: torch.Tensor) -> torch.Tensor:
    """Mean of the outermost pixel ring of each image (the background: shapes stay inside)."""
    mask = torch.ones(images.shape[-2:], dtype=torch.bool)
    mask[1:-1, 1:-1] = False
    return images[..., mask].mean(dim=(1, 2))


def test_same_seed_gives_identical_tensors_and_other_seeds_do_not():
    a = synthetic_task("source", 3, 24, seed=7).tensors
    b = synthetic_task("source", 3, 24, seed=7).tensors
    c = synthetic_task("source", 3, 24, seed=8).tensors
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("resolution", [20, 32])
def test_shapes_dtypes_ranges_and_balance(name, resolution):
    spec = TASKS[name]
    images, labels = synthetic_task(name, 4, resolution, seed=0).tensors
    n = 4 * spec.num_classes
    assert images.shape == (n, 3, resolution, resolution) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(torch.bincount(labels, minlength=spec.num_classes), torch.full((spec.num_classes,), 4))
    assert not torch.equal(labels, labels.sort().values)  # shuffled, not grouped by class


def test_the_named_tasks_are_the_documented_shifts():
    source, target = TASKS["source"], TASKS["target"]
    assert source.num_classes == 24 and target.num_classes == 16
    assert TASKS["color_shift"].classes == source.classes
    assert TASKS["new_classes"].classes == target.classes
    assert not set(target.classes) & set(source.classes)  # every target class is new
    assert {s for s, _ in target.classes} - {s for s, _ in source.classes} == set(SHAPES[6:])
    assert {t for _, t in source.classes} == set(TEXTURES[:4])
    assert (source.palette, target.palette) == ("source", "target")
    assert set(PALETTES) == {"source", "target"}
    assert task_spec("target") is target and task_spec(target) is target


def test_color_shift_moves_the_input_statistics_and_classes_do_not():
    src = synthetic_task("source", 8, 32, seed=0).tensors[0]
    shifted = synthetic_task("color_shift", 8, 32, seed=0).tensors[0]
    new = synthetic_task("new_classes", 8, 32, seed=0).tensors[0]
    # background brightness: dark in the source palette, bright in the target palette
    assert border(src).mean() < 0.3 < 0.7 < border(shifted).mean()
    assert border(src).max() < border(shifted).min()
    # new classes in the source palette keep the source's background statistics
    assert abs(border(src).mean() - border(new).mean()) < 0.05
    # and the shapes change colour: blue is the weakest channel at the centre of source images
    # (red to green hues), the strongest in the target palette (cyan to magenta)
    centre = (slice(None), slice(None), slice(12, 20), slice(12, 20))
    assert src[centre].mean(dim=(0, 2, 3)).argmin() == 2
    assert shifted[centre].mean(dim=(0, 2, 3)).argmax() == 2


def test_classes_differ_in_their_images():
    spec = TaskSpec((("circle", "solid"), ("cross", "solid")))
    images, labels = synthetic_task(spec, 50, 32, seed=0).tensors
    # foreground pixels stand out from the background; a circle covers more of them than a cross
    far = (images - images[:, :, :1, :1]).abs().amax(dim=1) > 0.2
    area = far.float().mean(dim=(1, 2))
    assert area[labels == 0].mean() > 1.15 * area[labels == 1].mean()


def test_loaders_are_seeded_and_disjoint():
    def make():
        return loaders("target", n_train=3, n_test=2, resolution=16, batch_size=8, seed=1)

    (train, test), (again, _) = make(), make()
    assert len(train.dataset) == 48 and len(test.dataset) == 32
    assert not torch.equal(train.dataset.tensors[0][:32], test.dataset.tensors[0])
    first = [b[1] for b in train]
    assert all(torch.equal(a, b[1]) for a, b in zip(first, again))  # the same shuffled order
    second = torch.cat([b[1] for b in train])
    assert not torch.equal(torch.cat(first), second)  # reshuffled every epoch
    x, y = next(iter(train))
    assert x.shape == (8, 3, 16, 16) and y.shape == (8,)
    assert torch.equal(torch.cat([b[1] for b in test]), test.dataset.tensors[1])  # test: fixed order


@pytest.mark.parametrize("call, match", [
    (lambda: synthetic_task("imagenet"), r"task must be a TaskSpec or one of \('source'"),
    (lambda: synthetic_task("source", n_per_class=0), "n_per_class must be an int >= 1, got 0"),
    (lambda: synthetic_task("source", resolution=4), "resolution must be an int >= 8, got 4"),
    (lambda: synthetic_task("source", resolution=32.0), "resolution must be an int >= 8"),
    (lambda: synthetic_task("source", seed=-1), "seed must be an int >= 0"),
    (lambda: TaskSpec((("hexagon", "solid"),)), "shape in .*circle"),
    (lambda: TaskSpec((("circle", "plaid"),)), "texture in .*solid"),
    (lambda: TaskSpec(()), "at least one"),
    (lambda: TaskSpec((("circle", "solid"),) * 2), "distinct"),
    (lambda: TaskSpec((("circle", "solid"),), palette="sepia"), r"palette must be one of \('source', 'target'\)"),
    (lambda: TaskSpec((("circle", "solid"),), noise=2.0), "noise must be in"),
    (lambda: TaskSpec((("circle", "solid"),), scale=(0.8, 0.2)), "scale must be"),
    (lambda: loaders("source", batch_size=0), "batch_size must be an int >= 1"),
    (lambda: loaders("source", n_train=0), "n_train must be an int >= 1"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
