"""ondevice.layer_equations: every layer's equation agrees with autograd and with the library's rules."""

import pytest
import torch

from ondevice import layer_equations as eq


@pytest.mark.parametrize("name", list(eq.EQUATIONS))
def test_pytorch_count_is_measured_and_the_math_never_exceeds_it(name):
    entry = eq.EQUATIONS[name]
    rows = eq.study(entry, torch.randn(eq.N, eq.C, eq.H, eq.W), show=False)
    assert len(rows) == 2 ** (1 + len(entry.params))
    keeps_nothing = name in ("AdaptiveAvgPool2d(1)", "Upsample (bilinear)")
    assert any(measured > 0 for *_, measured in rows) != keeps_nothing


@pytest.mark.parametrize("name", ["Conv2d", "GroupNorm", "MaxPool2d", "Linear"])
def test_library_rules_agree(name):
    entry = eq.EQUATIONS[name]
    for flags in entry.flags():
        eq.library_check(entry, flags)


def test_a_wrong_formula_is_caught():
    entry = eq.EQUATIONS["ReLU6"]
    wrong = eq.LayerEquation("ReLU6, counted as 1 bit", entry.build, {}, lambda grad_x: (0, eq.ELEMENTS / 8 * grad_x))
    with pytest.raises(AssertionError, match="measured"):
        eq.study(wrong, torch.randn(eq.N, eq.C, eq.H, eq.W), show=False)


def test_setting_is_checked():
    with pytest.raises(ValueError, match="setting must be"):
        eq.setting_flags(eq.EQUATIONS["Linear"], "C")
    assert eq.setting_flags(eq.EQUATIONS["Linear"], "A") == (True, False, True)
