"""Transfer experiments: accuracy, memory, FLOPs and time of every method (chapter 5).

One run fine-tunes a pretrained backbone (:mod:`ondevice.pretrained`) on a target task
(:mod:`ondevice.data`) with one transfer method and records

- the target test accuracy (and the last epoch's training accuracy);
- the training memory at the run's batch size from :func:`ondevice.memory.estimate` under all
  three profiles (frozen weights in 8 bits and Adam, as TinyTL reports), and the bytes autograd
  really saved, measured with :func:`ondevice.memory.measure` (equal to the ``pytorch`` profile's
  saved activations: the run asserts it);
- the FLOPs of one training step (:func:`ondevice.flops.training_flops`) and the wall time.

The recipe is TinyTL's, scaled down: Adam, cosine schedule, batch 8, the same learning rate for
every method. :data:`METHODS` lists the rows: TinyTL's six on the GroupNorm backbone with lite
branches; MobileTL (top K = 2 and 5 blocks) with FT-Full and FT-Last as references on the
BatchNorm backbone (MobileTL needs BatchNorm's running statistics; design.md §4). Compare
methods within a backbone: the two backbones were pretrained separately and differ in quality.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import methods as transfer
from .data import TASK_NAMES, loaders
from .flops import training_flops
from .memory import PROFILES, estimate, measure
from .pretrained import load_pretrained
from .train import evaluate, fit

GN, BN = "proxylessnas_tiny-gn-lite", "proxylessnas_tiny-bn"
RECORDED = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "transfer.json"  # chapter 5


@dataclass(frozen=True)
class Method:
    backbone: str
    name: str  # in ondevice.methods
    options: tuple = ()  # (key, value) pairs for methods.apply

    def apply(self, model):
        return transfer.apply(model, self.name, **dict(self.options))


METHODS: dict[str, Method] = {
    "FT-Full": Method(GN, "ft_full"),
    "FT-Last": Method(GN, "ft_last"),
    "FT-Norm+Last": Method(GN, "ft_norm_last"),
    "TinyTL-B": Method(GN, "tinytl_b"),
    "TinyTL-L": Method(GN, "tinytl_l"),
    "TinyTL-L+B": Method(GN, "tinytl_lb"),
    "FT-Full (BN)": Method(BN, "ft_full"),
    "FT-Last (BN)": Method(BN, "ft_last"),
    "MobileTL K=2": Method(BN, "mobiletl", (("k_blocks", 2),)),
    "MobileTL K=5": Method(BN, "mobiletl", (("k_blocks", 5),)),
}


@dataclass(frozen=True)
class Setup:
    """What every run of an experiment shares."""

    n_train: int = 20  # images per class
    n_test: int = 25
    epochs: int = 8
    batch_size: int = 8
    lr: float = 1e-3
    resolution: int = 32
    frozen_bits: int = 8
    optimizer: str = "adam"


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    seed: int
    accuracy: float
    train_accuracy: float
    trainable: int
    memory: dict  # profile -> total bytes (estimate)
    saved_activations: dict  # profile -> bytes kept for backward (estimate)
    measured_saved: int  # bytes autograd saved, measured with saved-tensor hooks
    flops: dict  # forward / backward / total of one training step
    seconds: float


def _check(tasks, method_names, seeds):
    for t in tasks:
        if t not in TASK_NAMES:
            raise ValueError(f"tasks must be in {TASK_NAMES}, got {t!r}")
    for m in method_names:
        if m not in METHODS:
            raise ValueError(f"methods must be in {tuple(METHODS)}, got {m!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")


def run_one(task: str, method: str, seed: int, setup: Setup = Setup(), progress: bool = False) -> Run:
    """Fine-tune :data:`METHODS` ``[method]``'s backbone on the built-in ``task`` with ``seed``."""
    _check([task], [method], [seed])
    train, test = loaders(task, n_train=setup.n_train, n_test=setup.n_test, resolution=setup.resolution,
                          batch_size=setup.batch_size, seed=seed)
    classes = int(train.dataset.tensors[1].max()) + 1
    return fine_tune(method, train, test, classes, seed, setup, task=task, progress=progress)


def fine_tune(method: str, train, test, num_classes: int, seed: int = 0, setup: Setup = Setup(), *,
              task: str = "custom", progress: bool = False) -> Run:
    """Fine-tune :data:`METHODS` ``[method]``'s backbone with loaders of any data set (for
    example :func:`ondevice.data.folder_loaders`) and record the run. ``setup`` gives the
    epochs, learning rate, batch size for the memory numbers, weight storage and optimizer."""
    _check([], [method], [seed])
    spec = METHODS[method]
    torch.manual_seed(seed)
    model = spec.apply(load_pretrained(spec.backbone, num_classes=num_classes))
    costs = step_costs(model, method, setup)
    start = time.perf_counter()
    history = fit(model, train, epochs=setup.epochs, lr=setup.lr, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    return Run(task, method, seed, evaluate(model, test), history.accuracy[-1],
               sum(p.numel() for p in model.parameters() if p.requires_grad), **costs, seconds=seconds)


def step_costs(model, method: str, setup: Setup) -> dict:
    """The memory and FLOPs fields of a :class:`Run` for ``model`` (a method applied): they depend
    on the network, the method and the batch shape, not on the data or the training."""
    shape = (setup.batch_size, 3, setup.resolution, setup.resolution)
    reports = {p: estimate(model, shape, profile=p, frozen_param_bits=setup.frozen_bits,
                           optimizer=setup.optimizer) for p in PROFILES}
    measured = measure(model, torch.rand(shape)).saved_activations
    if measured != reports["pytorch"].saved_activations:
        raise AssertionError(f"{method}: measured {measured} B saved, the pytorch profile says "
                             f"{reports['pytorch'].saved_activations} B")
    flops = training_flops(model, shape)
    return dict(memory={p: r.total for p, r in reports.items()},
                saved_activations={p: r.saved_activations for p, r in reports.items()}, measured_saved=measured,
                flops={"forward": flops.forward, "backward": flops.backward, "total": flops.total})


def task_classes(task: str) -> int:
    """The number of classes of the built-in ``task``."""
    train, _ = loaders(task, n_train=1, n_test=1)
    return int(train.dataset.tensors[1].max()) + 1


def refresh_costs(runs: list[Run], setup: Setup) -> list[Run]:
    """The runs with their memory and FLOPs fields recomputed by the current engine (accuracies and
    times untouched): for records made before a change of the memory model."""
    costs = {}
    for task, method in dict.fromkeys((r.task, r.method) for r in runs):
        spec = METHODS[method]
        model = spec.apply(load_pretrained(spec.backbone, num_classes=task_classes(task)))
        costs[task, method] = step_costs(model, method, setup)
    return [replace(r, **costs[r.task, r.method]) for r in runs]


def run(tasks, method_names=tuple(METHODS), seeds=(0, 1, 2), setup: Setup = Setup(),
        progress: bool = True) -> list[Run]:
    """Every (task, method, seed) combination, with a progress bar."""
    tasks, method_names, seeds = list(tasks), list(method_names), list(seeds)
    _check(tasks, method_names, seeds)
    jobs = [(t, m, s) for t in tasks for m in method_names for s in seeds]
    return [run_one(t, m, s, setup) for t, m, s in tqdm(jobs, desc="transfer runs", disable=not progress)]


@dataclass(frozen=True)
class Summary:
    task: str
    method: str
    runs: int
    accuracy: float  # mean over seeds
    accuracy_std: float  # sample standard deviation (0 for one run)
    memory: dict  # profile -> bytes (the same for every seed)
    flops: int
    seconds: float  # mean


def summarize(runs: list[Run]) -> list[Summary]:
    """Mean and spread over seeds, one row per (task, method), in the order first seen."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.task, r.method), []).append(r)
    rows = []
    for (task, method), rs in groups.items():
        acc = [r.accuracy for r in rs]
        rows.append(Summary(task, method, len(rs), statistics.fmean(acc),
                            statistics.stdev(acc) if len(acc) > 1 else 0.0, rs[0].memory,
                            rs[0].flops["total"], statistics.fmean(r.seconds for r in rs)))
    return rows


def save(runs: list[Run], path: Path, setup: Setup, **extra) -> None:
    """Write the runs, the setup and ``extra`` facts (machine, versions, command) as JSON."""
    Path(path).write_text(json.dumps({"setup": asdict(setup), **extra,
                                      "runs": [asdict(r) for r in runs]}, indent=1) + "\n")


def load(path: Path) -> tuple[list[Run], Setup, dict]:
    """Runs, setup and the other recorded facts of a file written by :func:`save`."""
    data = json.loads(Path(path).read_text())
    setup = Setup(**data.pop("setup"))
    runs = [Run(**r) for r in data.pop("runs")]
    return runs, setup, data


def pareto(rows: list[Summary], profile: str = "paper") -> list[Summary]:
    """The rows of one task that no other row beats on both memory (lower) and accuracy (higher)."""
    out = []
    for r in rows:
        dominated = any(o.memory[profile] <= r.memory[profile] and o.accuracy >= r.accuracy
                        and (o.memory[profile], o.accuracy) != (r.memory[profile], r.accuracy)
                        for o in rows if o.task == r.task)
        if not dominated:
            out.append(r)
    return out


BACKBONE_LABELS = {GN: "GroupNorm + lite backbone (TinyTL)", BN: "BatchNorm backbone (MobileTL)"}


def figure(rows: list[Summary], profile: str = "paper", title: str = ""):
    """One panel per task: memory (x, log) against accuracy (y), one marker per method, coloured
    by backbone, error bars the spread over seeds, each backbone's Pareto front dotted."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(dict.fromkeys(r.task for r in rows))
    cols = min(2, len(tasks))
    fig = make_subplots(rows=-(-len(tasks) // cols), cols=cols, subplot_titles=tasks,
                        horizontal_spacing=0.07, vertical_spacing=0.1)
    colors = dict(zip(BACKBONE_LABELS, ("#1f77b4", "#d62728")))
    for i, task in enumerate(tasks):
        row, col = i // cols + 1, i % cols + 1
        for backbone, label in BACKBONE_LABELS.items():
            mine = [r for r in rows if r.task == task and METHODS[r.method].backbone == backbone]
            if not mine:
                continue
            fig.add_trace(go.Scatter(
                x=[r.memory[profile] / 1e6 for r in mine], y=[100 * r.accuracy for r in mine],
                error_y=dict(type="data", array=[100 * r.accuracy_std for r in mine], visible=True),
                mode="markers+text", text=[r.method.replace(" (BN)", "") for r in mine],
                textposition="middle right", textfont=dict(size=9), marker=dict(color=colors[backbone], size=8),
                name=label, legendgroup=label, showlegend=i == 0,
                hovertemplate="%{text}<br>%{x:.2f} MB, %{y:.1f}%<extra>" + task + "</extra>"), row=row, col=col)
            front = sorted(pareto(mine, profile), key=lambda r: r.memory[profile])
            fig.add_trace(go.Scatter(x=[r.memory[profile] / 1e6 for r in front],
                                     y=[100 * r.accuracy for r in front], mode="lines",
                                     line=dict(dash="dot", width=1, color=colors[backbone]),
                                     legendgroup=label, showlegend=False, hoverinfo="skip"), row=row, col=col)
    mb = [r.memory[profile] / 1e6 for r in rows]
    last = -(-len(tasks) // cols)
    fig.update_xaxes(type="log", range=[math.log10(min(mb) / 1.2), math.log10(max(mb) * 2.5)])  # room for labels
    fig.update_xaxes(title_text=f"training memory, MB, {profile} profile (log scale)", row=last)
    fig.update_yaxes(title_text="accuracy (%)", col=1)
    fig.update_layout(height=360 * last, title=title,
                      legend=dict(orientation="h", y=-0.08), margin=dict(t=80))
    return fig


__all__ = ["BACKBONE_LABELS", "METHODS", "RECORDED", "Method", "Run", "Setup", "Summary", "figure", "fine_tune", "load",
           "pareto", "refresh_costs", "run", "run_one", "save", "step_costs", "summarize", "task_classes"]
