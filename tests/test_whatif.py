"""The what-if explorer: same numbers as the engine; the verdict flips at the computed boundary."""

from dataclasses import replace

import pytest
import torch

from ondevice import methods
from ondevice.memory import estimate
from ondevice.models import build
from ondevice.whatif import (DEVICES, MAX_BATCH, RESOLUTIONS, Explorer, Question, answer, limits,
                             configured, methods_for, network, problems, static_explorer, total)

Q = Question(model="proxylessnas_mobile", method="tinytl_lb", resolution=160, batch=8, frozen_bits=8,
             optimizer="adam", profile="paper", budget=40e6)


def test_answer_is_the_engine_estimate():
    a = answer(Q)
    model = configured(Q.model, Q.method)
    expected = estimate(model, (8, 3, 160, 160), profile="paper", frozen_param_bits=8, optimizer="adam")
    assert a.total == expected.total == total(Q)
    assert sum(a.breakdown().values()) == a.total
    assert a.fits == (a.total <= Q.budget) and a.margin == Q.budget - a.total


@pytest.mark.parametrize("profile", ["paper", "pytorch"])
def test_limits_sit_exactly_on_the_boundary(profile):
    q = replace(Q, profile=profile)
    for row in limits(q):
        here = replace(q, method=row.method)
        if row.largest_batch:
            assert total(replace(here, batch=row.largest_batch)) <= q.budget
        if 0 < row.largest_batch < MAX_BATCH:
            assert total(replace(here, batch=row.largest_batch + 1)) > q.budget
        if row.largest_resolution:
            assert total(replace(here, resolution=row.largest_resolution)) <= q.budget
            bigger = [r for r in RESOLUTIONS if r > row.largest_resolution]
            assert all(total(replace(here, resolution=r)) > q.budget for r in bigger)


def test_resnet_has_no_lite_residual_methods():
    assert "tinytl_lb" not in methods_for("resnet50") and "tinytl_b" in methods_for("resnet50")


@pytest.mark.parametrize("change, words", [
    ({"batch": 0}, "batch must be a whole number from 1"),
    ({"resolution": 32}, "resolution must be"),
    ({"budget": -5.0}, "budget must be a positive number"),
    ({"method": "mobiletl_x"}, "method must be one of"),
    ({"profile": "exact"}, "profile must be one of"),
])
def test_nonsense_is_explained(change, words):
    q = replace(Q, **change)
    assert any(words in p for p in problems(q))
    with pytest.raises(ValueError, match=words):
        answer(q)


def test_ui_verdict_flips_at_the_computed_boundary():
    ex = Explorer(Q)
    c = ex.controls
    boundary = total(Q)  # bytes at batch 8
    c["budget_mb"].value = boundary / 1e6  # exactly enough
    assert ex.last is not None and ex.last.fits and ex.verdict.value.startswith("<b>fits")
    c["batch"].value = 9  # one more sample: over budget
    assert not ex.last.fits and "does not fit" in ex.verdict.value
    c["batch"].value = 8
    c["budget_mb"].value = (boundary - 1) / 1e6  # one byte short
    assert not ex.last.fits
    largest = next(r.largest_batch for r in limits(ex.question()) if r.method == Q.method)
    assert largest == 7 and "<td>tinytl_lb</td>" in ex.table.value


def test_ui_turns_bad_input_into_a_message_not_a_traceback():
    ex = Explorer(Q)
    ex.controls["budget_mb"].value = -3.0
    assert ex.last is None and "Cannot answer" in ex.verdict.value and "budget" in ex.verdict.value
    ex.controls["budget_mb"].value = 50.0
    assert ex.last is not None


def test_ui_device_presets_and_model_switch():
    ex = Explorer(Q)
    ex.controls["device"].value = "Raspberry Pi Zero (512 MiB)"
    assert ex.question().budget == DEVICES["Raspberry Pi Zero (512 MiB)"]
    ex.controls["model"].value = "resnet50"  # the method list follows the model
    assert ex.controls["method"].value in methods_for("resnet50") and ex.last is not None


def test_static_figure_matches_the_engine_at_sampled_grid_points():
    batches = (1, 8)
    fig = static_explorer(batches=batches, resolutions=(96, 224, 320))
    assert len(fig.frames) == 3 and fig.layout.sliders[0].steps[1].label == "224"
    names = methods_for("proxylessnas_mobile")
    for frame, res in zip(fig.frames, (96, 224, 320)):
        for trace, b in zip(frame.data, batches):
            for m, y in zip(trace.x, trace.y):
                model = configured("proxylessnas_mobile", m)
                expected = estimate(model, (b, 3, res, res), profile="paper", frozen_param_bits=8,
                                    optimizer="adam").total
                assert y == expected / 1e6
    assert list(fig.frames[0].data[0].x) == names


def test_static_figure_labels_every_budget_line_where_the_line_is():
    import math

    fig = static_explorer(batches=(1,), resolutions=(96, 512))
    labels = {a.text: a.y for a in fig.layout.annotations}
    lines = sorted(s.y0 for s in fig.layout.shapes)
    assert lines == sorted(v / 1e6 for v in DEVICES.values())
    for name, size in DEVICES.items():  # log axis: annotations sit at log10 of the value
        assert labels[name] == math.log10(size / 1e6)
    low, high = fig.layout.yaxis.range
    bars = [y for f in fig.frames for t in f.data for y in t.y]
    assert 10**low < min(bars + lines) and 10**high > max(bars + lines)


def test_mobiletl_is_offered_on_its_own_batchnorm_network():
    assert "mobiletl" in methods_for("mobilenet_v3_large") and "mobiletl" not in methods_for("resnet50")
    net = configured("mobilenet_v2", "mobiletl")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert configured("mobilenet_v2", "tinytl_lb") is network("mobilenet_v2")  # untouched by MobileTL
    q = replace(Q, model="mobilenet_v2", method="mobiletl", profile="pytorch")
    expected = estimate(methods.apply(build("mobilenet_v2", num_classes=102), "mobiletl"), (8, 3, 160, 160),
                        profile="pytorch", frozen_param_bits=8, optimizer="adam")
    assert answer(q).total == expected.total
