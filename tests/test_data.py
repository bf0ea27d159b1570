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


# --- the real-image targets: scikit-learn's digits and ImageFolder data sets on disk ---

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ondevice.data import DIGITS, ImageFolder, digits_task, folder_loaders  # noqa: E402


def test_digits_are_deterministic_disjoint_balanced_and_rgb():
    train, test = digits_task(n_train=20, n_test=10, resolution=24, seed=3)
    again, _ = digits_task(n_train=20, n_test=10, resolution=24, seed=3)
    x, y = train.tensors
    assert torch.equal(x, again.tensors[0]) and torch.equal(y, again.tensors[1])
    assert x.shape == (200, 3, 24, 24) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 2])  # grey levels in every channel
    assert torch.bincount(y).tolist() == [20] * 10 and torch.bincount(test.tensors[1]).tolist() == [10] * 10
    flat = {tuple(img[0].flatten().tolist()) for img in x}
    assert not any(tuple(img[0].flatten().tolist()) in flat for img in test.tensors[0])  # no shared image
    other, _ = digits_task(n_train=20, n_test=10, resolution=24, seed=4)
    assert not torch.equal(other.tensors[1], y)


def test_digits_through_loaders_and_bad_sizes():
    train, test = loaders(DIGITS, n_train=4, n_test=2, batch_size=8)
    assert len(train.dataset) == 40 and len(test.dataset) == 20
    with pytest.raises(ValueError, match="n_train \\+ n_test must be at most 174"):
        digits_task(n_train=170, n_test=10)
    with pytest.raises(ValueError, match="task must be a TaskSpec or one of"):
        loaders("flowers")


def _write(path: Path, size=(20, 12), value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_image_folder_reads_resizes_and_splits_per_class(tmp_path):
    for c, value in (("cat", 10), ("dog", 200)):
        for i in range(5):
            _write(tmp_path / c / f"{i}.png", value=value)
    (tmp_path / "notes.txt").write_text("ignored")
    train, test, classes = folder_loaders(tmp_path, resolution=8, batch_size=3, test_fraction=0.4, seed=1)
    assert classes == ["cat", "dog"]
    assert len(train.dataset) == 6 and len(test.dataset) == 4
    x, y = next(iter(test))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x[y == 0], torch.full_like(x[y == 0], 10 / 255)) and set(y.tolist()) == {0, 1}
    again = folder_loaders(tmp_path, resolution=8, test_fraction=0.4, seed=1)[1]
    assert again.dataset.indices == test.dataset.indices


def test_image_folder_uses_a_given_train_test_split(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            _write(tmp_path / split / c / "0.jpg")
    train, test, classes = folder_loaders(tmp_path, resolution=8)
    assert classes == ["a", "b"] and len(train.dataset) == 2 and len(test.dataset) == 2
    _write(tmp_path / "val" / "c" / "0.jpg")
    with pytest.raises(ValueError, match="expected \\['a', 'b'\\]"):
        folder_loaders(tmp_path, resolution=8)


def test_malformed_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    _write(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="no class folders.*move them into one folder per class"):
        ImageFolder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="class folder .*empty' holds no images"):
        ImageFolder(tmp_path)
    _write(tmp_path / "empty" / "one.png")
    with pytest.raises(ValueError, match="needs at least 2 images"):
        folder_loaders(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not an image")
    data = ImageFolder(tmp_path, classes=["bad", "empty"])
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        data[0]
    with pytest.raises(ValueError, match="test_fraction must be"):
        folder_loaders(tmp_path, test_fraction=1.5)


@pytest.mark.parametrize("dtype, value, white", [(np.uint16, 60000, 65535), (np.uint8, 200, 255)])
def test_high_bit_depth_images_keep_their_range(tmp_path, dtype, value, white):
    from PIL import Image

    from ondevice.data.folder import load_image

    Image.fromarray(np.full((12, 20), value, dtype=dtype)).save(tmp_path / "grey.png")
    if dtype is np.uint16:
        assert Image.open(tmp_path / "grey.png").mode == "I;16"  # a 16-bit PNG, as Pillow reads it
    x = load_image(tmp_path / "grey.png", 8)
    assert x.shape == (3, 8, 8) and torch.allclose(x, torch.full_like(x, value / white))  # 60000 is not white
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    y = load_image(tmp_path / "ramp.png", 16)[0]
    assert torch.allclose(y, torch.from_numpy(ramp / 65535.0).float(), atol=1e-6)  # no resize: exact levels
    assert len(torch.unique(y)) == 256  # more levels than 8 bits could hold
