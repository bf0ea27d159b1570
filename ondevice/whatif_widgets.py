"""The live what-if explorer for JupyterLab, Binder or Colab (chapter 5): ipywidgets over
:mod:`ondevice.whatif`, computing with the memory engine as the controls move. The static book's
explorer is the JavaScript twin (``js/explorer/whatif.js``, data from :mod:`ondevice.whatif_data`).
"""

from __future__ import annotations

import html
from dataclasses import replace

from .devices import PRESETS
from .memory import FROZEN_BITS, OPTIMIZERS, PROFILES
from .memory.rules import MODES
from .models import ZOO
from .plotting import BookRenderer
from .whatif import (MAX_BATCH, PARTS, RESOLUTIONS, Answer, Limits, Question, answer, limits, mb,
                     method_on, methods_for, problems, profile_name, verdict)


def figure(q: Question):
    """Stacked bars of every method's breakdown for question ``q``, with the budget line."""
    import plotly.graph_objects as go

    answers = [answer(replace(q, method=m)) for m in methods_for(q.model)]
    fig = go.Figure()
    for key, label in PARTS.items():
        fig.add_bar(name=label, x=[a.question.method for a in answers],
                    y=[a.breakdown()[key] / 1e6 for a in answers])
    fig.add_hline(y=q.budget / 1e6, line_dash="dash", line_color="crimson",
                  annotation_text=f"budget {mb(q.budget)}")
    fig.update_layout(barmode="stack", height=420, yaxis_title="MB (10^6 bytes)",
                      title=f"{q.model}, {q.resolution} px, batch {q.batch}, {profile_name(q)} profile, "
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
        body.append(f"<tr{style}><td>{r.method}</td><td>{mb(r.total)}</td>"
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
            "backward": w.ToggleButtons(options=list(MODES), value=question.backward, description="backward",
                                        disabled=question.profile != "masked"),
            "device": w.Dropdown(options=[*PRESETS, "custom"], value="custom", description="device"),
            "budget_mb": w.FloatText(value=question.budget / 1e6, description="budget MB"),
        }
        self.wanted = question.method  # the method the reader chose, kept across model switches
        self._switching = False
        self.verdict = w.HTML()
        self.table = w.HTML()
        self.plot = w.Output()
        self.last: Answer | None = None
        for c in self.controls.values():
            c.observe(self._changed, names="value")
        self.ui = w.VBox([w.HBox([self.controls["model"], self.controls["method"]]),
                          self.controls["resolution"], self.controls["batch"],
                          self.controls["frozen_bits"], self.controls["optimizer"],
                          self.controls["profile"], self.controls["backward"],
                          w.HBox([self.controls["device"], self.controls["budget_mb"]]),
                          self.verdict, self.plot, self.table])
        self.update()

    def question(self) -> Question:
        c = {k: v.value for k, v in self.controls.items()}
        budget = PRESETS[c["device"]].budget if c["device"] in PRESETS else c["budget_mb"] * 1e6
        return Question(c["model"], c["method"], c["resolution"], c["batch"], c["frozen_bits"],
                        c["optimizer"], c["profile"], budget, c["backward"])

    def _changed(self, change) -> None:
        if self._switching:  # the method list is being replaced: one update after it
            return
        owner = change["owner"]
        if owner is self.controls["model"]:
            self._switch_methods(change["new"])
        elif owner is self.controls["method"]:
            self.wanted = change["new"]
        elif owner is self.controls["profile"]:
            self.controls["backward"].disabled = change["new"] != "masked"
        elif owner is self.controls["device"] and change["new"] in PRESETS:
            self._quietly("budget_mb", PRESETS[change["new"]].budget / 1e6)  # the budget follows
        elif owner is self.controls["budget_mb"] and self.controls["device"].value in PRESETS:
            self._quietly("device", "custom")  # a typed budget is a custom one
        self.update()

    def _quietly(self, name: str, value) -> None:
        """Set a control without a second update."""
        self._switching = True
        try:
            self.controls[name].value = value
        finally:
            self._switching = False

    def _switch_methods(self, model: str) -> None:
        # ipywidgets resets a Dropdown's value to its first option whenever its options change,
        # valid or not: set the options, then the method chosen on purpose (method_on).
        self._switching = True
        try:
            self.controls["method"].options = methods_for(model)
        finally:
            self._switching = False
        self._quietly("method", method_on(model, self.wanted))

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
