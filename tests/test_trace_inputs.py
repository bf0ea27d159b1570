"""Bad input to the memory estimate: a TypeError or ValueError that names the argument, or the
layer that cannot take the input and the smallest input that every window fits (issue 17)."""

import numpy as np
import pytest
import torch
from torch import nn

from ondevice.memory import estimate

SMALL_NET = nn.Sequential(nn.Conv2d(3, 4, 5), nn.MaxPool2d(3, 2), nn.Conv2d(4, 4, 3))


@pytest.mark.parametrize("shape, error, match", [
    (None, TypeError, r"input_shape must be a shape \(batch, channels, height, width\)"),
    ("1, 3, 8, 8", TypeError, "input_shape must be a shape"),
    (torch.randn(1, 3, 8, 8), TypeError, r"got a tensor of values; pass x\.shape"),
    ((3, 32, 32), ValueError, r"input_shape must have 4 dims .* got 3.*add the batch size"),
    ((1, 1, 3, 32, 32), ValueError, "input_shape must have 4 dims"),
    ((0, 3, 32, 32), ValueError, r"input_shape\[0\] \(batch\) must be >= 1, got 0"),
    ((2, 3, -32, 32), ValueError, r"input_shape\[2\] \(height\) must be >= 1"),
    ((True, 3, 32, 32), TypeError, r"input_shape\[0\] \(batch\) must be an int, got the bool True"),
    ((np.bool_(True), 3, 32, 32), TypeError, r"input_shape\[0\] \(batch\) must be an int, got the bool"),
    ((1, 3, 32.0, 32), TypeError, r"input_shape\[2\] \(height\) must be an int, got float 32\.0"),
    ((1, 1, 32, 32), ValueError, r"layer '0' \(Conv2d\): it expects 3 input channels, it gets 1; input_shape\[1\] must be 3"),
    ((2, 3, 8, 8), ValueError, r"layer '2' \(Conv2d\): its kernel .* needs an input at least 3 px high, it gets 1 px; "
                               r"every kernel and pooling window fits from an input of 11 x 11 px"),
    ((2, 3, 40, 6), ValueError, r"layer '1' \(MaxPool2d\): its pooling window .* at least 3 px wide, it gets 2 px; "
                                r"every kernel and pooling window fits from an input of 40 x 11 px"),
])
def test_bad_input_shape_raises_an_error_naming_the_argument_or_the_layer(shape, error, match):
    with pytest.raises(error, match=match):
        estimate(SMALL_NET, shape)


def test_the_smallest_size_named_in_the_error_works_and_one_less_does_not():
    estimate(SMALL_NET, (2, 3, 11, 11))
    with pytest.raises(ValueError, match="11 x 11"):
        estimate(SMALL_NET, (2, 3, 10, 11))


def test_numpy_and_tensor_integers_are_sizes():
    reference = estimate(SMALL_NET, (2, 3, 32, 32)).saved_activations
    assert estimate(SMALL_NET, np.array([2, 3, 32, 32])).saved_activations == reference
    assert estimate(SMALL_NET, (np.int64(2), 3, torch.tensor(32), 32)).saved_activations == reference
    assert estimate(SMALL_NET, torch.Size([2, 3, 32, 32])).saved_activations == reference


def test_a_linear_layer_names_its_expected_features():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(100, 2))
    with pytest.raises(ValueError, match=r"layer '2' \(Linear\): it expects 100 input features, it gets 144"):
        estimate(net, (1, 3, 8, 8))


def test_a_network_that_fails_on_real_tensors_raises_its_own_error_naming_the_layer():
    class Broken(nn.Module):
        def forward(self, x):
            if x.detach().sum() > 1e30:  # values: the shapes cannot follow it, so it is run for real
                return x
            return x.view(x.shape[0], 7, -1)  # 4 x 6 x 6 = 144 elements do not split into 7 rows

    with pytest.raises(RuntimeError) as info:
        estimate(nn.Sequential(nn.Conv2d(3, 4, 3), Broken()), (1, 3, 8, 8))
    assert "layer '1' (Broken)" in "".join(getattr(info.value, "__notes__", []))
