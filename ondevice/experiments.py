"""Transfer experiments: accuracy, memory, FLOPs and time of every method (chapter 5).

One run fine-tunes a pretrained backbone (:mod:`ondevice.pretrained`) on a target task
(:mod:`ondevice.data`) with one row of :data:`METHODS` and one seed, and records

- the target test accuracy (and the training accuracy of every epoch);
- the training memory of a step at the run's batch size from :func:`ondevice.memory.estimate`
  under the three profiles (:func:`step_costs` says with which settings), and the bytes autograd
  really saved in the network as it trained, measured with :func:`ondevice.memory.measure` (the
  run asserts it equals the estimate of that profile);
- the FLOPs of one training step (:func:`ondevice.flops.training_flops`) and the wall time.

The recipe is TinyTL's, scaled down: Adam, cosine schedule, batch 8, the same learning rate and
epochs for every method (:class:`Setup`). The rows: TinyTL's six methods, TinyTL-L+B with randomly
initialised lite branches (the paper's TinyTL-RandomL+B ablation) and TinyTL-L+B kernelized
(:func:`ondevice.kernelize`; detached GroupNorm backward and/or int8 frozen weights: what the
paper's accounting assumes) on the GroupNorm backbone with pretrained lite branches; on the
BatchNorm backbone MobileTL (top K = 2 and 5 blocks; its shift-only norms need BatchNorm's
running statistics), full and last-layer fine-tuning, and the plain BatchNorm baseline: every
BatchNorm normalising with its pretrained statistics (``frozen stats``), which any batch size
allows. Compare methods within a backbone: the two were pretrained separately.

Statistics (:func:`summarize`, :func:`compare`, :func:`verdicts`): means over seeds with 95%
Student-t confidence intervals; a claim compares two methods on the same seeds (same data
split), so its interval is that of the mean paired difference. :data:`CLAIMS` fixes, before any
result is seen, what each paper claim means here and the margin a verdict allows.

:func:`run` resumes: given a ``path`` it keeps the runs already recorded there (same setup) and
writes the file again after every new run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import methods as transfer
from .blocks import FrozenStatsBatchNorm2d, InvertedResidual
from .data import TASK_NAMES, loaders
from .flops import training_flops
from .lite_residual import add_lite_residuals
from .memory import PROFILES, estimate, measure
from .pretrained import load_pretrained
from .train import evaluate, fit

GN, BN = "proxylessnas_tiny-gn-lite", "proxylessnas_tiny-bn"
RECORDED = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "transfer.json"  # chapter 5
TASKS = ("digits", "new_classes")  # far from the source domain, near it


@dataclass(frozen=True)
class Method:
    """A row of the experiment: a backbone and a method of :mod:`ondevice.methods` with
    ``options``; ``frozen_stats``: every BatchNorm normalises with its pretrained statistics
    (:class:`~ondevice.blocks.FrozenStatsBatchNorm2d`); ``random_lite``: the pretrained lite
    branches are replaced by freshly initialised ones; ``kernelize``: ``(backward, frozen_bits)``
    of :func:`ondevice.kernelize`, applied after the method."""

    backbone: str
    name: str
    options: tuple = ()
    frozen_stats: bool = False
    random_lite: bool = False
    kernelize: tuple | None = None

    def stock(self, model):
        """``model`` with the method applied, not kernelized (what the estimate starts from)."""
        if self.random_lite:
            for block in model.modules():
                if isinstance(block, InvertedResidual):
                    block.lite = None
            add_lite_residuals(model)  # drawn from the current torch seed
        if self.frozen_stats:
            _freeze_statistics(model)
        return transfer.apply(model, self.name, **dict(self.options))

    def apply(self, model):
        """``model`` ready to train as this row trains it (kernelized if the row says so)."""
        model = self.stock(model)
        if self.kernelize is not None:
            from .lean import kernelize

            backward, bits = self.kernelize
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a layer left stock would make the row a different method
                kernelize(model, backward=backward, frozen_bits=bits)
        return model


def _freeze_statistics(model) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.BatchNorm2d:
                setattr(parent, name, FrozenStatsBatchNorm2d.from_batchnorm(child))


METHODS: dict[str, Method] = {
    "FT-Full": Method(GN, "ft_full"),
    "FT-Last": Method(GN, "ft_last"),
    "FT-Norm+Last": Method(GN, "ft_norm_last"),
    "TinyTL-B": Method(GN, "tinytl_b"),
    "TinyTL-L": Method(GN, "tinytl_l"),
    "TinyTL-L+B": Method(GN, "tinytl_lb"),
    "TinyTL-RandomL+B": Method(GN, "tinytl_lb", random_lite=True),
    "TinyTL-L+B [exact, int8]": Method(GN, "tinytl_lb", kernelize=("exact", 8)),
    "TinyTL-L+B [detached, fp32]": Method(GN, "tinytl_lb", kernelize=("detached", 32)),
    "TinyTL-L+B [detached, int8]": Method(GN, "tinytl_lb", kernelize=("detached", 8)),
    "FT-Full (BN)": Method(BN, "ft_full"),
    "FT-Full (BN, frozen stats)": Method(BN, "ft_full", frozen_stats=True),
    "FT-Last (BN)": Method(BN, "ft_last"),
    "TinyTL-B (BN, frozen stats)": Method(BN, "tinytl_b", frozen_stats=True),
    "MobileTL K=2": Method(BN, "mobiletl", (("k_blocks", 2),)),
    "MobileTL K=5": Method(BN, "mobiletl", (("k_blocks", 5),)),
}
BN_METHODS = tuple(m for m, spec in METHODS.items() if spec.backbone == BN)  # also for torchvision's networks


@dataclass(frozen=True)
class Setup:
    """What every run of an experiment shares (images per class, epochs, batch, resolution...)."""

    n_train: int = 100
    n_test: int = 50
    epochs: int = 4  # our choice: the whole experiment (160 runs) in about 1.5 h on a shared 2-core CPU
    batch_size: int = 8
    lr: float = 1e-3
    resolution: int = 64  # that of the shipped backbones (ondevice/weights/manifest.json)
    frozen_bits: int = 8  # of the paper profile, and of the masked one for rows not kernelized
    optimizer: str = "adam"


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    seed: int
    accuracy: float
    train_accuracy: float  # of the last epoch
    trainable: int
    memory: dict  # profile -> total bytes (estimate)
    saved_activations: dict  # profile -> bytes kept for backward (estimate)
    measured_saved: int  # bytes autograd saved in the network as it trained (saved-tensor hooks)
    flops: dict  # forward / backward / total of one training step
    seconds: float
    trained_as: str = "pytorch"  # the profile that describes the network as it trained
    train_curve: list = field(default_factory=list)  # training accuracy per epoch


def _check(tasks, method_names, seeds, known=TASK_NAMES):
    for t in tasks:
        if t not in known:
            raise ValueError(f"tasks must be in {known}, got {t!r}")
    for m in method_names:
        if m not in METHODS:
            raise ValueError(f"methods must be in {tuple(METHODS)}, got {m!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")


def run_one(task: str, method: str, seed: int, setup: Setup = Setup(), progress: bool = False,
            costs: dict | None = None) -> Run:
    """Fine-tune :data:`METHODS` ``[method]``'s backbone on the built-in ``task`` with ``seed``
    (``costs``: the :func:`step_costs` of this task and method, if already known)."""
    _check([task], [method], [seed])
    train, test, classes = builtin_data(task)(seed, setup)
    return fine_tune(method, train, test, classes, seed, setup, task=task, progress=progress, costs=costs)


def builtin_data(task: str):
    """The data function of a built-in task for :func:`run`: (seed, setup) -> (train, test, classes)."""
    def data(seed: int, setup: Setup):
        train, test = loaders(task, n_train=setup.n_train, n_test=setup.n_test, resolution=setup.resolution,
                              batch_size=setup.batch_size, seed=seed)
        return train, test, int(train.dataset.tensors[1].max()) + 1

    return data


def _backbone(method: str, backbone):
    spec = METHODS[method]
    return backbone or (lambda n: load_pretrained(spec.backbone, num_classes=n))


def fine_tune(method: str, train, test, num_classes: int, seed: int = 0, setup: Setup = Setup(), *,
              task: str = "custom", progress: bool = False, backbone=None, costs: dict | None = None) -> Run:
    """Fine-tune with loaders of any data set (for example :func:`ondevice.data.folder_loaders`)
    and record the run. ``backbone``: a function of ``num_classes`` giving the network to start
    from (default: the shipped backbone of the row, with a fresh head); ``setup`` gives the epochs,
    learning rate, batch size and resolution of the memory numbers, and the weight storage."""
    _check([], [method], [seed])
    if costs is None:
        costs = costs_of(method, num_classes, setup, backbone)
    torch.manual_seed(seed)
    model = METHODS[method].apply(_backbone(method, backbone)(num_classes))
    history = fit(model, train, epochs=setup.epochs, lr=setup.lr, seed=seed, progress=progress)
    return Run(task, method, seed, evaluate(model, test), history.accuracy[-1],
               sum(p.numel() for p in model.parameters() if p.requires_grad), **costs,
               seconds=history.seconds, train_curve=history.accuracy)


def step_costs(stock, method: str, setup: Setup, trained=None) -> dict:
    """The memory and FLOPs fields of a :class:`Run`: they depend on the network, the method and
    the batch shape, not on the data or the training. ``stock``: the network with the method
    applied, not kernelized; ``trained``: the network as it trains (default ``stock``).

    ``paper``: TinyTL's accounting, frozen weights at ``setup.frozen_bits``; ``pytorch``: stock
    PyTorch, every weight in 32 bits; ``masked``: what :func:`ondevice.kernelize` makes the
    network keep, with the row's ``(backward, frozen_bits)`` if it is kernelized, else
    ``("exact", setup.frozen_bits)``. The bytes saved by ``trained`` are measured (on a copy: a
    forward pass in training mode would move BatchNorm statistics) and must equal its profile's."""
    spec = METHODS[method]
    backward, bits = spec.kernelize or ("exact", setup.frozen_bits)
    shape = (setup.batch_size, 3, setup.resolution, setup.resolution)
    settings = {"paper": dict(frozen_param_bits=setup.frozen_bits), "pytorch": dict(frozen_param_bits=32),
                "masked": dict(frozen_param_bits=bits, backward=backward)}
    reports = {p: estimate(stock, shape, profile=p, optimizer=setup.optimizer, **settings[p]) for p in PROFILES}
    trained_as = "masked" if spec.kernelize else "pytorch"
    measured = measure(copy.deepcopy(trained if trained is not None else stock), torch.rand(shape)).saved_activations
    if measured != reports[trained_as].saved_activations:
        raise AssertionError(f"{method}: measured {measured} B saved, the {trained_as} profile says "
                             f"{reports[trained_as].saved_activations} B")
    flops = training_flops(stock, shape)
    return dict(memory={p: r.total for p, r in reports.items()},
                saved_activations={p: r.saved_activations for p, r in reports.items()}, measured_saved=measured,
                flops={"forward": flops.forward, "backward": flops.backward, "total": flops.total},
                trained_as=trained_as)


def task_classes(task: str) -> int:
    """The number of classes of the built-in ``task``."""
    train, _ = loaders(task, n_train=1, n_test=1)
    return int(train.dataset.tensors[1].max()) + 1


def costs_of(method: str, num_classes: int, setup: Setup, backbone=None) -> dict:
    """:func:`step_costs` of a row with a ``num_classes`` head (``backbone`` as in :func:`fine_tune`)."""
    spec, make = METHODS[method], _backbone(method, backbone)
    torch.manual_seed(0)
    stock = spec.stock(make(num_classes))
    torch.manual_seed(0)
    return step_costs(stock, method, setup, trained=spec.apply(make(num_classes)))


def refresh_costs(runs: list[Run], setup: Setup) -> list[Run]:
    """The runs (of built-in tasks) with their memory and FLOPs fields recomputed by the current
    engine, accuracies and times untouched: for records made before a change of the memory model."""
    _check([r.task for r in runs], [r.method for r in runs], [r.seed for r in runs] or [0])
    costs = {(t, m): costs_of(m, task_classes(t), setup) for t, m in dict.fromkeys((r.task, r.method) for r in runs)}
    return [replace(r, **costs[r.task, r.method]) for r in runs]


def run(tasks, method_names=tuple(METHODS), seeds=(0, 1, 2, 3, 4), setup: Setup = Setup(), progress: bool = True,
        *, path: Path | None = None, facts: dict | None = None, data: dict | None = None, backbone=None) -> list[Run]:
    """Every (task, method, seed), seed by seed, with a progress bar. With ``path``: the runs
    already recorded there are kept (the file's setup must be ``setup``), the others run, and the
    file is written again after each, with ``facts`` (machine, command) and the seconds spent.
    ``data``: task name -> function (seed, setup) -> (train loader, test loader, classes), for
    data sets of your own (default: the built-in tasks); ``backbone`` as in :func:`fine_tune`."""
    tasks, method_names, seeds = list(tasks), list(method_names), list(seeds)
    _check(tasks, method_names, seeds, known=tuple(data) if data is not None else TASK_NAMES)
    data = data if data is not None else {t: builtin_data(t) for t in tasks}
    done: list[Run] = []
    facts = dict(facts or {})
    if path is not None and Path(path).exists():
        done, recorded, old = load(path)
        if recorded != setup:
            raise ValueError(f"{path} holds runs of another setup ({recorded}); give another path or delete it")
        facts = {**old, **facts, "sessions": old.get("sessions", [])}
    have = {(r.task, r.method, r.seed) for r in done}
    jobs = [(t, m, s) for s in seeds for t in tasks for m in method_names if (t, m, s) not in have]
    session = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": 0, "seconds": 0.0,
               **{k: facts.pop(k) for k in ("command", "machine") if k in facts}}
    facts.setdefault("sessions", []).append(session)
    costs: dict = {}
    runs = list(done)
    start = time.perf_counter()
    for t, m, s in tqdm(jobs, desc="transfer runs", disable=not progress):
        train, test, classes = data[t](s, setup)
        if (t, m) not in costs:
            costs[t, m] = costs_of(m, classes, setup, backbone)
        runs.append(fine_tune(m, train, test, classes, s, setup, task=t, backbone=backbone, costs=costs[t, m]))
        session.update(runs=session["runs"] + 1, seconds=time.perf_counter() - start)
        if path is not None:
            save(runs, path, setup, **facts)
    return [r for r in runs if r.task in tasks and r.method in method_names and r.seed in seeds]


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by bisection
    on its distribution function (Abramowitz & Stegun 26.7.3-4, exact for integer ``df``)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1 or not 0.5 < p < 1:
        raise ValueError(f"need an int df >= 1 and 0.5 < p < 1, got df={df!r}, p={p!r}")

    def central(t):  # P(|T| < t)
        theta = math.atan(t / math.sqrt(df))
        c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
        for k in range(2 if df % 2 else 1, df - 1, 2):
            term *= c2 * k / (k + 1)
            total += term
        if df % 2 == 0:
            return math.sin(theta) * total
        return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))

    lo, hi = 0.0, 1.0
    while central(hi) < 2 * p - 1:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if central(mid) < 2 * p - 1 else (lo, mid)
    return (lo + hi) / 2


def interval(values) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (Student t; 0 for one value)."""
    values = list(values)
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, t_quantile(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


@dataclass(frozen=True)
class Summary:
    task: str
    method: str
    runs: int
    accuracy: float  # mean over seeds
    accuracy_std: float  # sample standard deviation (0 for one run)
    accuracy_ci95: float  # half-width of the 95% confidence interval of the mean
    memory: dict  # profile -> bytes (the same for every seed)
    flops: int
    seconds: float  # mean


def _groups(runs):
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.task, r.method), []).append(r)
    return groups


def summarize(runs: list[Run]) -> list[Summary]:
    """Mean, spread and 95% interval over seeds, one row per (task, method), in the order first seen."""
    rows = []
    for (task, method), rs in _groups(runs).items():
        acc = [r.accuracy for r in rs]
        mean, half = interval(acc)
        rows.append(Summary(task, method, len(rs), mean, statistics.stdev(acc) if len(acc) > 1 else 0.0, half,
                            rs[0].memory, rs[0].flops["total"], statistics.fmean(r.seconds for r in rs)))
    return rows


@dataclass(frozen=True)
class Comparison:
    task: str
    a: str
    b: str
    seeds: int  # seeds both methods ran with
    difference: float  # mean of accuracy(a) - accuracy(b) over those seeds, in points
    ci95: float  # half-width of its 95% interval, in points

    @property
    def low(self) -> float:
        return self.difference - self.ci95

    @property
    def high(self) -> float:
        return self.difference + self.ci95


def compare(runs: list[Run], task: str, a: str, b: str) -> Comparison:
    """Method ``a`` minus method ``b`` on ``task``, paired by seed (the same data split)."""
    by = {(r.method, r.seed): r.accuracy for r in runs if r.task == task}
    seeds = sorted(s for m, s in by if m == a and (b, s) in by)
    if not seeds:
        raise ValueError(f"no seed on which both {a!r} and {b!r} ran on {task!r}")
    mean, half = interval(100 * (by[a, s] - by[b, s]) for s in seeds)
    return Comparison(task, a, b, len(seeds), mean, half)


@dataclass(frozen=True)
class Claim:
    """A paper's claim that method ``a`` is at least ``threshold`` points above method ``b``.
    Replicated when the whole 95% interval of the paired difference is above the threshold, not
    replicated when it is all below, inconclusive when it contains it."""

    text: str
    source: str
    a: str
    b: str
    threshold: float

    def verdict(self, c: Comparison) -> str:
        if c.low > self.threshold:
            return "replicated"
        if c.high < self.threshold:
            return "not replicated"
        return "inconclusive"


MARGIN = 3.0  # points: our choice of how far "about the same" may stretch, fixed before the runs
CLAIMS = (
    Claim("TinyTL-L+B matches FT-Full", "TinyTL abstract: no loss of accuracy against full fine-tuning",
          "TinyTL-L+B", "FT-Full", -MARGIN),
    Claim("TinyTL-L+B far above FT-Last", "TinyTL abstract: +34.1% on Stanford Cars",
          "TinyTL-L+B", "FT-Last", MARGIN),
    Claim("MobileTL K=5 loses about 0.6 points against FT-Full",
          "MobileTL abstract: -0.6% on CIFAR-10 at K=5", "MobileTL K=5", "FT-Full (BN)", -0.6 - MARGIN),
)


def verdicts(runs: list[Run], claims=CLAIMS) -> list[dict]:
    """Every claim on every task of ``runs``: the paired comparison and its verdict."""
    tasks = list(dict.fromkeys(r.task for r in runs))
    out = []
    for claim in claims:
        for task in tasks:
            c = compare(runs, task, claim.a, claim.b)
            out.append({"claim": claim.text, "source": claim.source, "threshold": claim.threshold,
                        **asdict(c), "verdict": claim.verdict(c)})
    return out


def save(runs: list[Run], path: Path, setup: Setup, **extra) -> None:
    """Write the runs, the setup, ``extra`` facts (machine, versions, command), the summaries
    with their intervals and the verdicts as JSON (atomically: an interruption leaves the old file)."""
    data = {"setup": asdict(setup), **extra, "summary": [asdict(s) for s in summarize(runs)]}
    try:
        data["verdicts"] = verdicts(runs)
    except ValueError:  # not every method of a claim has run yet
        data["verdicts"] = []
    data["runs"] = [asdict(r) for r in runs]
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def load(path: Path) -> tuple[list[Run], Setup, dict]:
    """Runs, setup and the other recorded facts of a file written by :func:`save` (summaries and
    verdicts are recomputed from the runs, not read)."""
    data = json.loads(Path(path).read_text())
    setup = Setup(**data.pop("setup"))
    runs = [Run(**r) for r in data.pop("runs")]
    data.pop("summary", None)
    data.pop("verdicts", None)
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
    by backbone, error bars the 95% confidence interval of the mean, each backbone's Pareto
    front (of the means) dotted."""
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
                error_y=dict(type="data", array=[100 * r.accuracy_ci95 for r in mine], visible=True),
                mode="markers+text", text=[r.method.replace(" (BN)", "") for r in mine],
                customdata=[[100 * r.accuracy_ci95, r.runs] for r in mine],
                textposition="middle right", textfont=dict(size=9), marker=dict(color=colors[backbone], size=8),
                name=label, legendgroup=label, showlegend=i == 0,
                hovertemplate="%{text}<br>%{x:.2f} MB, %{y:.1f}% +- %{customdata[0]:.1f} (95% CI, "
                              "%{customdata[1]} seeds)<extra>" + task + "</extra>"), row=row, col=col)
            front = sorted(pareto(mine, profile), key=lambda r: r.memory[profile])
            fig.add_trace(go.Scatter(x=[r.memory[profile] / 1e6 for r in front],
                                     y=[100 * r.accuracy for r in front], mode="lines",
                                     line=dict(dash="dot", width=1, color=colors[backbone]),
                                     legendgroup=label, showlegend=False, hoverinfo="skip"), row=row, col=col)
    mb = [r.memory[profile] / 1e6 for r in rows]
    last = -(-len(tasks) // cols)
    fig.update_xaxes(type="log", range=[math.log10(min(mb) / 1.2), math.log10(max(mb) * 2.5)])  # room for labels
    fig.update_xaxes(title_text=f"training memory, MB, {profile} profile (log scale)", row=last)
    fig.update_yaxes(title_text="accuracy (%), mean and 95% CI", col=1)
    fig.update_layout(height=420 * last, title=title,
                      legend=dict(orientation="h", y=-0.12), margin=dict(t=80))
    return fig


__all__ = ["BACKBONE_LABELS", "BN_METHODS", "CLAIMS", "Claim", "Comparison", "MARGIN", "METHODS", "RECORDED", "Method",
           "Run", "Setup", "Summary", "TASKS", "builtin_data", "compare", "costs_of", "figure", "fine_tune", "interval", "load",
           "pareto", "refresh_costs", "run", "run_one", "save", "step_costs", "summarize", "t_quantile",
           "task_classes", "verdicts"]
