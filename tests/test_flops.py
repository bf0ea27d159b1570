"""ondevice.flops: training FLOPs from torch's counter, with the grouped-conv weight-gradient fix."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ondevice import methods
from ondevice.flops import training_flops
from ondevice.models import mobilenet_v3_small


def conv_flops(n, c_in, c_out, k, h_out, groups=1):
    return 2 * n * c_out * (c_in // groups) * k * k * h_out * h_out


@pytest.mark.parametrize("groups", [1, 4, 16], ids=["dense", "grouped", "depthwise"])
def test_conv_backward_costs_one_forward_per_gradient(groups):
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=groups, bias=False)
    forward = conv_flops(2, 16, 16, 3, 8, groups)
    f = training_flops(conv, (2, 16, 8, 8))  # weight trains, the input needs no gradient: dW only
    assert (f.forward, f.backward) == (forward, forward)
    both = training_flops(nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), conv), (2, 16, 8, 8))
    assert both.backward == 2 * forward + conv_flops(2, 16, 16, 1, 8)  # dx and dW, then the 1x1's dW


def test_the_uncorrected_library_count_is_groups_times_too_high_for_depthwise_weight_gradients():
    # documents why ondevice.flops overrides the formula (torch 2.13); if torch fixes it, the
    # override becomes a no-op and this test says so
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    with FlopCounterMode(display=False) as counter:
        conv(torch.randn(1, 32, 8, 8)).sum().backward()
    raw_backward = counter.get_total_flops() - conv_flops(1, 32, 32, 3, 8, 32)
    assert raw_backward == 32 * training_flops(conv, (1, 32, 8, 8)).backward


def test_full_fine_tuning_backward_is_twice_the_forward_except_the_stem_input_gradient():
    model = methods.apply(mobilenet_v3_small(num_classes=10), "ft_full")
    f = training_flops(model, (2, 3, 64, 64))
    stem = conv_flops(2, 3, 16, 3, 32)
    assert f.backward == 2 * f.forward - stem
    assert f.total == f.forward + f.backward


def test_ft_last_backward_is_the_output_layer_weight_gradient():
    model = methods.apply(mobilenet_v3_small(num_classes=10), "ft_last")
    assert training_flops(model, (3, 3, 64, 64)).backward == 2 * 3 * 1024 * 10


def test_mobiletl_backward_grows_with_k_and_the_forward_does_not():
    flops = [training_flops(methods.apply(mobilenet_v3_small(num_classes=10), "mobiletl", k_blocks=k),
                            (1, 3, 64, 64)) for k in (0, 3, 11)]
    assert len({f.forward for f in flops}) == 1
    assert flops[0].backward < flops[1].backward < flops[2].backward
    full = training_flops(methods.apply(mobilenet_v3_small(num_classes=10), "ft_full"), (1, 3, 64, 64))
    # every block trains in both; ft_full also computes the stem's dW and, because the stem
    # trains, the input gradient of the first block's first conv (a 3x3 depthwise, stride 2)
    stem_dw, first_dx = conv_flops(1, 3, 16, 3, 32), conv_flops(1, 16, 16, 3, 16, groups=16)
    assert full.backward == flops[2].backward + stem_dw + first_dx


def test_the_model_is_left_untouched_and_bad_shapes_are_named():
    model = mobilenet_v3_small(num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training_flops(model, (2, 3, 32, 32))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training and all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match=r"input_shape must be \(batch, channels, height, width\)"):
        training_flops(model, (3, 32, 32))
