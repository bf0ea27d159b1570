"""What fits where: training memory of a transfer method against a device's budget (chapter 5).

A question is a model, a transfer method, an input resolution, a batch size, how frozen weights
are stored, the optimizer, an accounting profile (``masked``: the model after
:func:`ondevice.kernelize`, with its ``backward`` mode) and a memory budget; the answer is the
memory breakdown from :func:`ondevice.memory.estimate`, whether it fits and by how much, and for
every method the largest batch and the largest resolution that fit. ``explorer()`` asks these
questions with widgets in a live kernel (:mod:`ondevice.whatif_widgets`); the static HTML book
gets the same explorer in plain JavaScript, answering from numbers the book build precomputes
(:mod:`ondevice.whatif_data`).
Device budgets, with what firmware, the OS and the runtime take, are :data:`ondevice.devices.PRESETS`.

The networks are the zoo's models as TinyTL trains them: GroupNorm with weight standardization,
lite residual branches where the model has inverted residual blocks, and a 102-class head (the
head of TinyTL's Table 2). MobileTL runs on the stock BatchNorm network with its top 5 blocks in
MobileTL mode (chapter 3).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace

from torch import nn

from . import methods as transfer
from .blocks import InvertedResidual
from .lite_residual import add_lite_residuals
from .memory import FROZEN_BITS, OPTIMIZERS, PROFILES, MemoryReport, memory_curve
from .memory.rules import MODES
from .models import ZOO, build, to_groupnorm

RESOLUTIONS = tuple(range(96, 513, 32))
MAX_BATCH = 128
NUM_CLASSES = 102
PARTS = {  # what the total is made of (Answer.breakdown): key -> label
    "params": "parameters",
    "param_grads": "gradients",
    "optimizer_state": "optimizer state",
    "saved_activations": "saved activations",
    "temporaries": "temporaries",
    "other": "other (the input batch, its labels)",
}
_AT_PEAK = {"parameters": "params", "gradients": "param_grads", "optimizer state": "optimizer_state",
            "saved activations": "saved_activations", "temporaries": "temporaries", "other": "other"}
# When the model changes to one without inverted residual blocks, the method the reader chose
# becomes what is left of it there (our choice): TinyTL-L without lite branches trains the
# classifier only, TinyTL-L+B its biases and the classifier, MobileTL its norms and the classifier.
FALLBACK = {"tinytl_l": "ft_last", "tinytl_lb": "tinytl_b", "mobiletl": "ft_norm_last"}
STATIC_BOOK = "BOOK_STATIC"  # set by tools/build_book.py while it executes the notebooks


@functools.lru_cache(maxsize=None)
def network(model: str) -> nn.Module:
    """The zoo model ``model`` as TinyTL trains it (one shared instance per name)."""
    net = build(model, num_classes=NUM_CLASSES)
    if any(isinstance(b, InvertedResidual) for b in net.modules()):
        add_lite_residuals(net)
    return to_groupnorm(net)


@functools.lru_cache(maxsize=None)
def _mobiletl_network(model: str) -> nn.Module:
    # MobileTL rebuilds the top blocks of the stock BatchNorm network (it needs running
    # statistics and no lite branches), so it gets its own instance, converted once.
    return transfer.apply(build(model, num_classes=NUM_CLASSES), "mobiletl")


def configured(model: str, method: str) -> nn.Module:
    """The network of ``model`` set up for ``method``: TinyTL's network (:func:`network`) for the
    methods that only choose what trains, the stock BatchNorm network in MobileTL mode (top 5
    blocks, the paper's headline K) for ``"mobiletl"``."""
    if method in transfer.BLOCK_METHODS:
        return _mobiletl_network(model)
    return transfer.apply(network(model), method)


def methods_for(model: str) -> list[str]:
    """The transfer methods that apply to ``model``: TinyTL-L and MobileTL need inverted
    residual blocks, MobileTL also activations it has a 1-bit twin for (not SiLU, say)."""
    return list(_methods(model))


@functools.lru_cache(maxsize=None)
def _methods(model: str) -> tuple[str, ...]:
    has_irb = any(isinstance(b, InvertedResidual) for b in network(model).modules())
    return tuple(m for m in (*transfer.METHODS, *transfer.BLOCK_METHODS)
                 if (has_irb or m not in ("tinytl_l", "tinytl_lb", "mobiletl"))
                 and (m != "mobiletl" or _mobiletl_applies(model)))


def _mobiletl_applies(model: str) -> bool:
    try:
        _mobiletl_network(model)
    except TypeError:  # an activation without a 1-bit twin (to_mask_activation says which)
        return False
    return True


@functools.lru_cache(maxsize=None)
def resolutions_for(model: str) -> tuple[int, ...]:
    """The :data:`RESOLUTIONS` that ``model``'s network can take: from the smallest that traces
    (a large pooling window, such as Inception-V3's auxiliary head, needs a larger input; a larger
    input never fails once a smaller one fits)."""
    for i, r in enumerate(RESOLUTIONS):
        try:
            _curve(model, "ft_full", r, "pytorch", "exact", 32, "sgd")
        except ValueError:
            continue
        return RESOLUTIONS[i:]
    return ()


def method_on(model: str, wanted: str) -> str:
    """The method to show for ``model`` when the reader last chose ``wanted``: ``wanted`` if it
    applies, else what is left of it (:data:`FALLBACK`)."""
    options = methods_for(model)
    return wanted if wanted in options else FALLBACK.get(wanted, options[0])


@dataclass(frozen=True)
class Question:
    model: str = "proxylessnas_mobile"
    method: str = "tinytl_lb"
    resolution: int = 224
    batch: int = 8
    frozen_bits: int = 8
    optimizer: str = "adam"
    profile: str = "paper"
    budget: float = 64e6  # bytes
    backward: str = "exact"  # the masked profile's backward mode (ignored by the others)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def problems(q: Question) -> list[str]:
    """What is wrong with ``q``, in words (empty when it can be answered)."""
    out = []
    if q.model not in ZOO:
        out.append(f"model must be one of {', '.join(ZOO)}, got {q.model!r}")
    elif q.method not in methods_for(q.model):
        out.append(f"method must be one of {', '.join(methods_for(q.model))} for {q.model}, got {q.method!r}")
    if not _whole(q.resolution) or not RESOLUTIONS[0] <= q.resolution <= RESOLUTIONS[-1]:
        out.append(f"resolution must be a whole number of pixels from {RESOLUTIONS[0]} to "
                   f"{RESOLUTIONS[-1]} (the lite residual branches need at least 64), got {q.resolution!r}")
    elif q.model in ZOO and q.resolution < min(resolutions_for(q.model), default=RESOLUTIONS[-1] + 1):
        out.append(f"resolution must be at least {min(resolutions_for(q.model))} px for {q.model} "
                   f"(its layers' windows need it), got {q.resolution!r}")
    if not _whole(q.batch) or not 1 <= q.batch <= MAX_BATCH:
        out.append(f"batch must be a whole number from 1 to {MAX_BATCH}, got {q.batch!r}")
    if q.frozen_bits not in FROZEN_BITS or isinstance(q.frozen_bits, bool):
        out.append(f"frozen_bits must be one of {FROZEN_BITS}, got {q.frozen_bits!r}")
    if q.optimizer not in OPTIMIZERS:
        out.append(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {q.optimizer!r}")
    if q.profile not in PROFILES:
        out.append(f"profile must be one of {PROFILES}, got {q.profile!r}")
    if q.backward not in MODES:
        out.append(f"backward must be one of {MODES}, got {q.backward!r}")
    if isinstance(q.budget, bool) or not isinstance(q.budget, (int, float)) or not math.isfinite(q.budget) \
            or not q.budget > 0:
        out.append(f"budget must be a positive, finite number of bytes, got {q.budget!r}")
    return out


def _checked(q: Question) -> Question:
    wrong = problems(q)
    if wrong:
        raise ValueError("; ".join(wrong))
    return q


@dataclass(frozen=True)
class Answer:
    question: Question
    report: MemoryReport

    @property
    def total(self) -> int:
        return self.report.total

    @property
    def fits(self) -> bool:
        return self.total <= self.question.budget

    @property
    def margin(self) -> float:
        """Budget minus total, in bytes (negative: over budget)."""
        return self.question.budget - self.total

    def breakdown(self) -> dict[str, int]:
        """The total split into :data:`PARTS`: what is alive at the peak, by category, where the
        engine models the whole step (the report's ``at_peak``); otherwise the parameters, their
        gradients, the optimizer state, the saved activations and the peak's temporaries (the
        paper profile counts no gradients or state)."""
        r = self.report
        parts = dict.fromkeys(PARTS, 0)
        at_peak = getattr(r, "at_peak", None)
        if at_peak:
            for category, n in at_peak.items():
                parts[_AT_PEAK[category]] += n
        else:
            parts.update(params=r.params, param_grads=r.param_grads, optimizer_state=r.optimizer_state,
                         saved_activations=r.saved_activations, temporaries=r.peak - r.saved_activations)
            if r.profile == "paper":
                parts["param_grads"] = parts["optimizer_state"] = 0
        assert sum(parts.values()) == r.total
        return parts


def curve_of(q: Question):
    """The engine's :class:`~ondevice.memory.MemoryCurve` of ``q`` (all but the batch and the
    budget), cached; ``q`` is checked first."""
    _checked(q)
    backward = q.backward if q.profile == "masked" else "exact"  # the others ignore it
    return _curve(q.model, q.method, q.resolution, q.profile, backward, q.frozen_bits, q.optimizer)


def answer(q: Question) -> Answer:
    """Estimate the memory of question ``q``; a ValueError lists what is wrong with it."""
    return Answer(q, curve_of(q).report(q.batch))  # = estimate(...) without its per-layer table


@functools.lru_cache(maxsize=8192)
def _curve(model: str, method: str, resolution: int, profile: str, backward: str, bits: int, optimizer: str):
    net = configured(model, method)
    return memory_curve(net, (3, resolution, resolution), profile=profile, backward=backward,
                        frozen_param_bits=bits, optimizer=optimizer)


def total(q: Question) -> int:
    """``answer(q).total``, from a cached memory curve (fast once the curve exists)."""
    return curve_of(q).total(q.batch)


@dataclass(frozen=True)
class Limits:
    method: str
    total: int  # at the question's resolution and batch
    fits: bool
    largest_batch: int  # at the question's resolution; 0 if batch 1 does not fit
    largest_resolution: int | None  # at the question's batch, among resolutions_for(model)


def limits(q: Question) -> list[Limits]:
    """For every method of ``q.model``: its total, and the largest batch / resolution that fit."""
    _checked(q)
    rows = []
    for m in methods_for(q.model):
        here = replace(q, method=m)
        curve = curve_of(here)
        fitting = [r for r in resolutions_for(q.model) if total(replace(here, resolution=r)) <= q.budget]
        t = curve.total(q.batch)
        rows.append(Limits(m, t, t <= q.budget, curve.largest_batch(q.budget, MAX_BATCH),
                           max(fitting) if fitting else None))
    return rows


def mb(n: float) -> str:
    """Bytes in MB (10^6, two decimals), or in KB (one decimal) under 100 kB."""
    return f"{n / 1e6:,.2f} MB" if abs(n) >= 1e5 else f"{n / 1e3:,.1f} KB"


def verdict(a: Answer) -> str:
    """One line: fits or not, the total in MB (two decimals), the margin."""
    q, t = a.question, f"{a.total / 1e6:,.2f} MB"
    if a.fits:
        return f"fits: {t} of {mb(q.budget)}, {mb(a.margin)} to spare"
    return f"does not fit: {t} is {mb(-a.margin)} over the {mb(q.budget)} budget"


def profile_name(q: Question) -> str:
    """The profile in words: ``masked`` is the kernelized model with its backward mode."""
    return f"masked ({q.backward})" if q.profile == "masked" else q.profile


def explorer(question: Question = Question()):
    """The live what-if UI: ipywidgets in JupyterLab, Binder or Colab. While the static book is
    built (``BOOK_STATIC=1``, set by ``tools/build_book.py``), the in-browser explorer instead
    (:class:`ondevice.whatif_data.Page`): a saved widget's controls do nothing without a kernel."""
    if os.environ.get(STATIC_BOOK) == "1":
        from .whatif_data import Page

        return Page(question)
    from .whatif_widgets import Explorer

    return Explorer(question).ui
