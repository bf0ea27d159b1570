"""ondevice.block_memory: the hand counts of an inverted residual block equal the estimate's rows."""

import pytest
import torch

from ondevice import block_memory as bm
from ondevice import methods
from ondevice.lite_residual import add_lite_residuals
from ondevice.memory import estimate
from ondevice.models import mobilenet_v2, proxylessnas_mobile, to_groupnorm

R, B = 96, 2


def test_pytorch_count_of_every_expanded_mobilenet_v2_block():
    with torch.device("meta"):
        model = mobilenet_v2()
    parts = bm.kept_by_part(estimate(model, (B, 3, R, R)))
    sizes = bm.block_input_sizes(model, R)
    expanded = [(i, b) for i, b in bm.inverted_residuals(model) if b.expand is not None]
    assert len(expanded) == 16
    for i, block in expanded:
        assert bm.irb_kept_bytes(block, sizes[i], batch=B) == parts[(i, "main")], i


def test_paper_count_of_main_and_lite_branches():
    with torch.device("meta"):
        model = methods.ft_full(to_groupnorm(add_lite_residuals(proxylessnas_mobile(num_classes=10))))
    parts = bm.kept_by_part(estimate(model, (B, 3, R, R), profile="paper"))
    sizes = bm.block_input_sizes(model, R)
    for i, block in bm.inverted_residuals(model)[1:]:
        assert bm.irb_kept_bytes(block, sizes[i], batch=B, profile="paper") == parts[(i, "main")], i
        assert bm.lite_kept_bytes(block, sizes[i], batch=B) == parts[(i, "lite")], i


def test_bad_arguments_are_named():
    model = mobilenet_v2()
    first = model.blocks[0]
    with pytest.raises(ValueError, match="profile must be one of"):
        bm.irb_kept_bytes(model.blocks[1], 56, batch=1, profile="masked")
    with pytest.raises(ValueError, match="no expansion conv"):
        bm.irb_kept_bytes(first, 112, batch=1)
    with pytest.raises(ValueError, match="no lite residual branch"):
        bm.lite_kept_bytes(model.blocks[1], 56, batch=1)


def test_ideal_ratio_at_expansion_six():
    assert bm.ideal_ratio(6) == pytest.approx((4 * 26 + 1.5) / (4 + 1 / 32))
