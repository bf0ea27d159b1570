"""Will it fit? The what-if explorer's verdict against a real step under a hard budget
(chapter 5, "Theory meets the allocator"): on a grid of small configurations and budgets, the
explorer says "fits" exactly when the step runs (ondevice.memory.measure_step, budget mode)."""

import copy

import pytest
import torch

from ondevice import kernelize
from ondevice.memory import StepOutOfMemory, measure_step
from ondevice.whatif import Question, answer, configured

BUDGETS_MB = (16, 24, 32, 48, 64, 96, 128)  # custom budgets typed into the explorer
CONFIGS = [(model, method, variant, batch)
           for model, method in (("proxylessnas_mobile", "ft_full"), ("proxylessnas_mobile", "tinytl_lb"),
                                 ("proxylessnas_mobile", "ft_last"), ("mobilenet_v2", "mobiletl"))
           for variant in ("stock", "exact", "detached") for batch in (1, 4)]
PROFILE = {"stock": ("pytorch", "exact", 32), "exact": ("masked", "exact", 32), "detached": ("masked", "detached", 8)}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the estimate follows the thread count (which convolution PyTorch picks)
    yield
    torch.set_num_threads(before)


def run(model_name, method, variant, batch, budget=None):
    profile, backward, bits = PROFILE[variant]
    model = copy.deepcopy(configured(model_name, method))
    if profile == "masked":
        model = kernelize(model, backward=backward, frozen_bits=bits)
    torch.manual_seed(0)
    x, target = torch.randn(batch, 3, 96, 96), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    return measure_step(model, x, target, optimizer, budget=budget)


@pytest.mark.parametrize("model_name, method, variant, batch", CONFIGS, ids=["-".join(map(str, c)) for c in CONFIGS])
def test_fits_exactly_when_the_step_runs(model_name, method, variant, batch):
    profile, backward, bits = PROFILE[variant]
    peak = run(model_name, method, variant, batch).peak
    verdicts = {}
    for mb in BUDGETS_MB:
        q = Question(model=model_name, method=method, resolution=96, batch=batch, frozen_bits=bits, optimizer="adam",
                     profile=profile, backward=backward, budget=mb * 1e6)
        verdicts[mb] = answer(q).fits
        assert verdicts[mb] == (peak <= mb * 1e6), (mb, answer(q).total, peak)
    # and the budget mode itself, at the two budgets around the peak: one runs, the other stops
    above = min((mb for mb in BUDGETS_MB if mb * 1e6 >= peak), default=None)
    below = max((mb for mb in BUDGETS_MB if mb * 1e6 < peak), default=None)
    if above is not None:
        assert run(model_name, method, variant, batch, budget=above * 1e6).peak == peak
    if below is not None:
        with pytest.raises(StepOutOfMemory):
            run(model_name, method, variant, batch, budget=below * 1e6)
