"""What fits where: training memory of a transfer method against a device's budget (chapter 5).

A question is a model, a transfer method, an input resolution, a batch size, how frozen weights
are stored, the optimizer, an accounting profile and a memory budget; the answer is the memory
breakdown from :func:`ondevice.memory.estimate`, whether it fits and by how much, and for every
method the largest batch and the largest resolution that fit. ``explorer()`` asks these questions
with widgets in a live kernel; ``static_explorer()`` draws a precomputed grid as one plotly
figure with a slider, for the static HTML book. Both use the same numbers.

The networks are the zoo's models as TinyTL trains them: GroupNorm with weight standardization,
lite residual branches where the model has inverted residual blocks, and a 102-class head (the
head of TinyTL's Table 2). MobileTL runs on the stock BatchNorm network with its top 5 blocks in
MobileTL mode (chapter 3).
"""

from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass, replace

from torch import nn

from . import methods as transfer
from .blocks import InvertedResidual
from .lite_residual import add_lite_residuals
from .memory import FROZEN_BITS, OPTIMIZERS, PROFILES, MemoryReport, memory_curve
from .models import ZOO, build, to_groupnorm
from .plotting import BookRenderer

KIB, MIB, GIB = 2**10, 2**20, 2**30
DEVICES = {  # memory a training step may use
    "Microcontroller (320 KiB SRAM)": 320 * KIB,
    "Raspberry Pi Zero (512 MiB)": 512 * MIB,
    "Phone app (1 GiB per-app limit)": 1 * GIB,
    "Raspberry Pi 4 (2 GiB)": 2 * GIB,
    "Jetson Nano (4 GiB)": 4 * GIB,
}
RESOLUTIONS = tuple(range(96, 513, 32))
MAX_BATCH = 128
NUM_CLASSES = 102
PARTS = {  # breakdown shown in the bars: report field -> label
    "params": "parameters",
    "param_grads": "gradients",
    "optimizer_state": "optimizer state",
    "saved_activations": "saved activations",
    "temporaries": "peak temporaries",
}


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
    residual blocks."""
    has_irb = any(isinstance(b, InvertedResidual) for b in network(model).modules())
    return [m for m in (*transfer.METHODS, *transfer.BLOCK_METHODS)
            if has_irb or m not in ("tinytl_l", "tinytl_lb", "mobiletl")]


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


def problems(q: Question) -> list[str]:
    """What is wrong with ``q``, in words (empty when it can be answered)."""
    out = []
    if q.model not in ZOO:
        out.append(f"model must be one of {', '.join(ZOO)}, got {q.model!r}")
    elif q.method not in methods_for(q.model):
        out.append(f"method must be one of {', '.join(methods_for(q.model))} for {q.model}, got {q.method!r}")
    if not isinstance(q.resolution, int) or not RESOLUTIONS[0] <= q.resolution <= RESOLUTIONS[-1]:
        out.append(f"resolution must be a whole number of pixels from {RESOLUTIONS[0]} to "
                   f"{RESOLUTIONS[-1]} (the lite residual branches need at least 64), got {q.resolution!r}")
    if not isinstance(q.batch, int) or not 1 <= q.batch <= MAX_BATCH:
        out.append(f"batch must be a whole number from 1 to {MAX_BATCH}, got {q.batch!r}")
    if q.frozen_bits not in FROZEN_BITS:
        out.append(f"frozen_bits must be one of {FROZEN_BITS}, got {q.frozen_bits!r}")
    if q.optimizer not in OPTIMIZERS:
        out.append(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {q.optimizer!r}")
    if q.profile not in PROFILES:
        out.append(f"profile must be one of {PROFILES}, got {q.profile!r}")
    if not isinstance(q.budget, (int, float)) or not q.budget > 0:
        out.append(f"budget must be a positive number of bytes, got {q.budget!r}")
    return out


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
        """The total split into :data:`PARTS` (the paper profile counts no gradients or state)."""
        r = self.report
        parts = {"params": r.params, "param_grads": r.param_grads, "optimizer_state": r.optimizer_state,
                 "saved_activations": r.saved_activations, "temporaries": r.peak - r.saved_activations}
        if r.profile == "paper":
            parts["param_grads"] = parts["optimizer_state"] = 0
        assert sum(parts.values()) == r.total
        return parts


def answer(q: Question) -> Answer:
    """Estimate the memory of question ``q``; a ValueError lists what is wrong with it."""
    wrong = problems(q)
    if wrong:
        raise ValueError("; ".join(wrong))
    curve = _curve(q.model, q.method, q.resolution, q.profile, q.frozen_bits, q.optimizer)
    return Answer(q, curve.report(q.batch))  # = estimate(...) without its per-layer table


@functools.lru_cache(maxsize=4096)
def _curve(model: str, method: str, resolution: int, profile: str, bits: int, optimizer: str):
    net = configured(model, method)
    return memory_curve(net, (3, resolution, resolution), profile=profile, frozen_param_bits=bits,
                        optimizer=optimizer)


def total(q: Question) -> int:
    """``answer(q).total``, from a cached memory curve (fast once the curve exists)."""
    return _curve(q.model, q.method, q.resolution, q.profile, q.frozen_bits, q.optimizer).total(q.batch)


@dataclass(frozen=True)
class Limits:
    method: str
    total: int  # at the question's resolution and batch
    fits: bool
    largest_batch: int  # at the question's resolution; 0 if batch 1 does not fit
    largest_resolution: int | None  # at the question's batch, among RESOLUTIONS


def limits(q: Question) -> list[Limits]:
    """For every method of ``q.model``: its total, and the largest batch / resolution that fit."""
    rows = []
    for m in methods_for(q.model):
        curve = _curve(q.model, m, q.resolution, q.profile, q.frozen_bits, q.optimizer)
        fitting = [r for r in RESOLUTIONS
                   if total(replace(q, method=m, resolution=r)) <= q.budget]
        t = curve.total(q.batch)
        rows.append(Limits(m, t, t <= q.budget, curve.largest_batch(q.budget, MAX_BATCH),
                           max(fitting) if fitting else None))
    return rows


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB" if abs(n) >= 1e5 else f"{n / 1e3:,.1f} KB"


def verdict(a: Answer) -> str:
    """One line: fits or not, with the margin."""
    q = a.question
    if a.fits:
        return f"fits: {_mb(a.total)} of {_mb(q.budget)}, {_mb(a.margin)} to spare"
    return f"does not fit: {_mb(a.total)} is {_mb(-a.margin)} over the {_mb(q.budget)} budget"


def figure(q: Question):
    """Stacked bars of every method's breakdown for question ``q``, with the budget line."""
    import plotly.graph_objects as go

    answers = [answer(replace(q, method=m)) for m in methods_for(q.model)]
    fig = go.Figure()
    for key, label in PARTS.items():
        fig.add_bar(name=label, x=[a.question.method for a in answers],
                    y=[a.breakdown()[key] / 1e6 for a in answers])
    fig.add_hline(y=q.budget / 1e6, line_dash="dash", line_color="crimson",
                  annotation_text=f"budget {_mb(q.budget)}")
    fig.update_layout(barmode="stack", height=420, yaxis_title="MB (10^6 bytes)",
                      title=f"{q.model}, {q.resolution} px, batch {q.batch}, {q.profile} profile, "
                            f"frozen {q.frozen_bits}-bit, {q.optimizer}")
    return fig


def _limits_table(rows: list[Limits], chosen: str) -> str:
    head = ("<tr><th>method</th><th>total</th><th>fits</th><th>largest batch</th>"
            "<th>largest resolution</th></tr>")
    body = []
    for r in rows:
        style = ' style="font-weight:bold"' if r.method == chosen else ""
        batch = (f"{r.largest_batch}+" if r.largest_batch == MAX_BATCH else str(r.largest_batch)) \
            if r.largest_batch else "none"
        res = f"{r.largest_resolution} px" if r.largest_resolution else "none"
        body.append(f"<tr{style}><td>{r.method}</td><td>{_mb(r.total)}</td>"
                    f"<td>{'yes' if r.fits else 'no'}</td><td>{batch}</td><td>{res}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


class Explorer:
    """The live what-if UI. ``explorer().ui`` is the widget; ``controls`` drive it in code."""

    def __init__(self, question: Question = Question()):
        import ipywidgets as w

        self.controls = {
            "model": w.Dropdown(options=list(ZOO), value=question.model, description="model"),
            "method": w.Dropdown(options=methods_for(question.model), value=question.method,
                                 description="method"),
            "resolution": w.IntSlider(value=question.resolution, min=RESOLUTIONS[0],
                                      max=RESOLUTIONS[-1], step=32, description="resolution"),
            "batch": w.IntSlider(value=question.batch, min=1, max=MAX_BATCH, description="batch"),
            "frozen_bits": w.ToggleButtons(options=list(FROZEN_BITS), value=question.frozen_bits,
                                           description="frozen bits"),
            "optimizer": w.ToggleButtons(options=list(OPTIMIZERS), value=question.optimizer,
                                         description="optimizer"),
            "profile": w.ToggleButtons(options=list(PROFILES), value=question.profile,
                                       description="profile"),
            "device": w.Dropdown(options=[*DEVICES, "custom"], value="custom", description="device"),
            "budget_mb": w.FloatText(value=question.budget / 1e6, description="budget MB"),
        }
        self.verdict = w.HTML()
        self.table = w.HTML()
        self.plot = w.Output()
        self.last: Answer | None = None
        for c in self.controls.values():
            c.observe(self._changed, names="value")
        self.ui = w.VBox([w.HBox([self.controls["model"], self.controls["method"]]),
                          self.controls["resolution"], self.controls["batch"],
                          self.controls["frozen_bits"], self.controls["optimizer"],
                          self.controls["profile"],
                          w.HBox([self.controls["device"], self.controls["budget_mb"]]),
                          self.verdict, self.plot, self.table])
        self.update()

    def question(self) -> Question:
        c = {k: v.value for k, v in self.controls.items()}
        budget = DEVICES[c["device"]] if c["device"] in DEVICES else c["budget_mb"] * 1e6
        return Question(c["model"], c["method"], c["resolution"], c["batch"], c["frozen_bits"],
                        c["optimizer"], c["profile"], budget)

    def _changed(self, change) -> None:
        if change["owner"] is self.controls["model"]:
            options = methods_for(change["new"])
            method = self.controls["method"]
            method.options = options
            if method.value not in options:
                method.value = options[-1]
        if change["owner"] is self.controls["device"] and change["new"] in DEVICES:
            self.controls["budget_mb"].value = DEVICES[change["new"]] / 1e6
        self.update()

    def update(self) -> None:
        """Recompute verdict, figure and table; any problem becomes a message, not a traceback."""
        q = self.question()
        wrong = problems(q)
        if wrong:
            self.last = None
            self.verdict.value = "<b>Cannot answer:</b> " + html.escape("; ".join(wrong))
            return
        try:
            self.last = answer(q)
            self.verdict.value = f"<b>{html.escape(verdict(self.last))}</b>"
            self.table.value = _limits_table(limits(q), q.method)
            # The figure is set as the Output widget's state, not printed into it: capturing
            # output through an Output widget makes nbclient (the book build, nbval) wait forever
            # in some executions (reproduced with ipykernel 7.4 / nbclient 0.11).
            bundle = BookRenderer().to_mimebundle(figure(q).to_dict())
            self.plot.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
        except Exception as error:  # the UI must explain, never show a traceback
            self.last = None
            self.verdict.value = f"<b>Cannot answer:</b> {html.escape(str(error))}"


def explorer(question: Question = Question()):
    """The live what-if UI (ipywidgets) for JupyterLab, Binder or Colab."""
    return Explorer(question).ui


def static_explorer(model: str = "proxylessnas_mobile", *, profile: str = "paper", frozen_bits: int = 8,
                    optimizer: str = "adam", batches=(1, 2, 4, 8, 16, 32), resolutions=RESOLUTIONS):
    """A plotly figure over a precomputed grid that works with no kernel (the static book).

    Bars: every method's total (MB) for the chosen batch (dropdown) at the resolution of the
    slider; horizontal lines: the device budgets of :data:`DEVICES`. Same numbers as
    :func:`total` / :func:`ondevice.memory.estimate`.
    """
    import plotly.graph_objects as go

    names = methods_for(model)
    batches, resolutions = list(batches), list(resolutions)
    q0 = Question(model=model, profile=profile, frozen_bits=frozen_bits, optimizer=optimizer)

    def bars(res):
        return [go.Bar(name=f"batch {b}", x=names, visible=(b == batches[0]),
                       y=[total(replace(q0, method=m, resolution=res, batch=b)) / 1e6 for m in names])
                for b in batches]

    frames = [go.Frame(name=str(r), data=bars(r)) for r in resolutions]
    fig = go.Figure(data=frames[0].data, frames=frames)
    for name, size in DEVICES.items():
        fig.add_hline(y=size / 1e6, line_dash="dot", line_color="gray")
        # On a log axis an annotation's y is log10 of the value (plotly's convention); add_hline's
        # own annotation skips that conversion, so the labels are placed here.
        fig.add_annotation(x=0, xref="paper", xanchor="left", y=math.log10(size / 1e6), yanchor="bottom",
                           text=name, showarrow=False, font=dict(size=10, color="dimgray"),
                           bgcolor="rgba(255, 255, 255, 0.75)")
    # One fixed range for every frame, wide enough for every bar and every budget line.
    values = [y for f in frames for t in f.data for y in t.y] + [s / 1e6 for s in DEVICES.values()]
    fig.update_layout(
        height=520, yaxis_type="log", yaxis_title="training memory, MB (log scale)",
        yaxis_range=[math.log10(min(values)) - 0.2, math.log10(max(values)) + 0.3],
        title=f"{model}: {profile} profile, frozen weights {frozen_bits}-bit, {optimizer}",
        sliders=[{"currentvalue": {"prefix": "resolution: ", "suffix": " px"}, "pad": {"t": 40},
                  "steps": [{"label": str(r), "method": "animate",
                             "args": [[str(r)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                                 "transition": {"duration": 0}}]} for r in resolutions]}],
        updatemenus=[{"type": "dropdown", "x": 1.0, "xanchor": "right", "y": 1.15, "showactive": True,
                      "buttons": [{"label": f"batch {b}", "method": "restyle",
                                   "args": [{"visible": [b == c for c in batches]}]} for b in batches]}],
    )
    return fig
