"""The what-if explorer: same numbers as the engine; the verdict flips at the computed boundary;
bad questions are refused by answer, total and limits alike; the widget keeps a chosen method."""

import math
from dataclasses import replace

import pytest
import torch

from ondevice import methods
from ondevice.devices import PRESETS
from ondevice.memory import estimate
from ondevice.models import build
from ondevice.whatif import (FALLBACK, MAX_BATCH, RESOLUTIONS, Question, answer, configured, explorer,
                             limits, method_on, methods_for, network, problems, total, verdict)
from ondevice.whatif_data import Page
from ondevice.whatif_widgets import Explorer

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
    ({"batch": -5}, "batch must be a whole number from 1"),
    ({"batch": True}, "batch must be a whole number from 1"),
    ({"resolution": 32}, "resolution must be"),
    ({"budget": -5.0}, "budget must be a positive, finite number"),
    ({"budget": math.nan}, "budget must be a positive, finite number"),
    ({"budget": True}, "budget must be a positive, finite number"),
    ({"method": "mobiletl_x"}, "method must be one of"),
    ({"profile": "exact"}, "profile must be one of"),
    ({"profile": "masked", "backward": "approximate"}, "backward must be one of"),
])
def test_nonsense_is_explained_by_answer_total_and_limits_alike(change, words):
    q = replace(Q, **change)
    assert any(words in p for p in problems(q))
    for ask in (answer, total, limits):
        with pytest.raises(ValueError, match=words):
            ask(q)


def test_a_model_that_needs_a_larger_input_says_so(monkeypatch):
    import ondevice.whatif as whatif

    assert whatif.resolutions_for("proxylessnas_mobile") == RESOLUTIONS  # every one traces
    monkeypatch.setattr(whatif, "resolutions_for", lambda model: RESOLUTIONS[3:])  # as if from 192 px
    assert problems(replace(Q, resolution=160)) == [
        "resolution must be at least 192 px for proxylessnas_mobile (its layers' windows need it), got 160"]
    assert {r.largest_resolution for r in limits(replace(Q, resolution=192, budget=1e12))} == {RESOLUTIONS[-1]}


def test_masked_profile_answers_with_its_backward_mode():
    q = replace(Q, profile="masked", frozen_bits=32)
    model = configured(Q.model, Q.method)
    for mode in ("exact", "detached"):
        expected = estimate(model, (8, 3, 160, 160), profile="masked", backward=mode, frozen_param_bits=32,
                            optimizer="adam")
        assert answer(replace(q, backward=mode)).total == expected.total
    assert answer(replace(q, backward="detached")).total < answer(q).total
    assert answer(replace(Q, backward="detached")).total == answer(Q).total  # only masked has modes


def test_verdict_gives_the_total_in_mb_with_two_decimals():
    a = answer(Q)
    assert f"{a.total / 1e6:,.2f} MB" in verdict(a)
    tiny = answer(replace(Q, budget=a.total + 10))  # a margin under 100 kB is written in KB
    assert verdict(tiny) == f"fits: {a.total / 1e6:,.2f} MB of {tiny.question.budget / 1e6:,.2f} MB, 0.0 KB to spare"


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


def test_ui_device_presets_subtract_and_a_typed_budget_is_custom():
    ex = Explorer(Q)
    pi = PRESETS["Raspberry Pi Zero 2 W (512 MB)"]
    ex.controls["device"].value = pi.name
    assert ex.question().budget == pi.budget < pi.ram and ex.controls["budget_mb"].value == pi.budget / 1e6
    ex.controls["budget_mb"].value = 50.0
    assert ex.controls["device"].value == "custom" and ex.question().budget == 50e6


def test_ui_model_switch_keeps_a_valid_method_chosen_on_purpose():
    ex = Explorer(Q)  # tinytl_lb
    calls = []
    update = ex.update
    ex.update = lambda: (calls.append(1), update())
    ex.controls["model"].value = "resnet50"  # no inverted residual blocks: what is left of TinyTL-L+B
    assert ex.controls["method"].value == FALLBACK["tinytl_lb"] == "tinytl_b" and len(calls) == 1
    assert ex.last is not None and ex.last.question.method == "tinytl_b"
    ex.controls["model"].value = "mobilenet_v2"  # the reader's choice comes back where it applies
    assert ex.controls["method"].value == "tinytl_lb"
    ex.controls["method"].value = "ft_norm_last"  # valid everywhere: ipywidgets alone would reset it
    ex.controls["model"].value = "resnet50"
    assert ex.controls["method"].value == "ft_norm_last"
    assert method_on("resnet50", "mobiletl") == "ft_norm_last" and method_on("mobilenet_v2", "mobiletl") == "mobiletl"


def test_explorer_is_the_in_browser_page_while_the_static_book_builds(monkeypatch):
    monkeypatch.setenv("BOOK_STATIC", "1")
    page = explorer(Question(budget=64e6))
    assert isinstance(page, Page) and 'data-question="{&quot;model&quot;' in page._repr_html_()
    monkeypatch.delenv("BOOK_STATIC")
    assert not isinstance(explorer(Question(budget=64e6)), Page)


def test_mobiletl_is_offered_on_its_own_batchnorm_network():
    assert "mobiletl" in methods_for("mobilenet_v3_large") and "mobiletl" not in methods_for("resnet50")
    net = configured("mobilenet_v2", "mobiletl")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert configured("mobilenet_v2", "tinytl_lb") is network("mobilenet_v2")  # untouched by MobileTL
    q = replace(Q, model="mobilenet_v2", method="mobiletl", profile="pytorch")
    expected = estimate(methods.apply(build("mobilenet_v2", num_classes=102), "mobiletl"), (8, 3, 160, 160),
                        profile="pytorch", frozen_param_bits=8, optimizer="adam")
    assert answer(q).total == expected.total
