"""The memory of a whole training step, modelled moment by moment (chapter 5, "Theory meets the
allocator").

A training step is ``zero_grad`` (gradients freed), the forward pass, the loss, the backward
pass and the optimizer's update. :func:`plan` turns a traced model (batch 1, :mod:`.trace`) and
what each layer keeps (the rules) into *moments*, one per layer in each pass, and says what is
alive at each, by the categories :func:`ondevice.memory.measure_step` measures:

- before the step, alive throughout: ``parameters`` (and buffers), ``optimizer state`` (the
  optimizer has stepped before), ``other`` (the input batch and its labels);
- forward, at each layer in call order: the ``saved activations`` kept so far; as
  ``temporaries``, every tensor still to be used: a layer's input and output, the inputs of the
  calls around it (a module call holds its arguments until it returns), the outputs of earlier
  siblings that the parent still uses (the main branch's output while the lite branch runs), and
  the backend's workspace for the layer (:mod:`.workspace`);
- the loss: the logits and what cross-entropy keeps (its log-softmax output, for backward);
- backward, at each layer in reverse order: what is still kept (a layer's saved tensors are freed
  after its backward), the ``gradients`` of the parameters of the layers done so far (autograd
  allocates them as it goes), and as ``temporaries`` the gradient arriving at the layer's
  output, the one it computes for its input, the gradients waiting for a tensor that several
  layers read (a block's input, read by its shortcut, its main branch and its lite branch, holds
  its gradient from the first delivery until the last), and the backend's workspace;
- the optimizer's update: every gradient, and the optimizer's own temporaries.

Each moment is ``per_sample * batch + fixed`` bytes per category (the kept masks are rounded up
to whole words, as :class:`~.rules.Stored` does), so a batch size is a few sums: the step's peak
is the largest moment. What the model does not know is named, not folded in: the allocator's
rounding, and any workspace of a layer without a rule in :mod:`.workspace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .rules import Stored
from .trace import Call

CATEGORIES = ("parameters", "optimizer state", "gradients", "saved activations", "temporaries", "other")
_TEMP, _GRAD = CATEGORIES.index("temporaries"), CATEGORIES.index("gradients")


@dataclass
class Moment:
    phase: str  # "forward", "loss", "backward", "optimizer"
    layer: str
    kept: int  # how many of the plan's kept tensors are alive (a prefix of them)
    temporaries: int  # bytes per sample
    fixed: int  # temporaries independent of the batch
    capped: tuple[int, int]  # temporaries of min(bytes per sample * batch, cap) (chunked work)
    gradients: int  # parameter gradients alive
    conv: object = None  # a workspace.ConvWork: a convolution's scratch, which depends on the batch


@dataclass
class StepPlan:
    """The moments of a step, without what is alive throughout (added by :meth:`evaluate`)."""

    kept: list[Stored]
    moments: list[Moment]

    def __post_init__(self):
        m = self.moments
        self._per = np.array([x.temporaries for x in m], np.int64)
        self._fixed = np.array([x.fixed for x in m], np.int64)
        self._cap_per = np.array([x.capped[0] for x in m], np.int64)
        self._cap = np.array([x.capped[1] for x in m], np.int64)
        self._grads = np.array([x.gradients for x in m], np.int64)
        self._kept = np.array([x.kept for x in m], np.int64)
        self._optimizer = np.array([x.phase == "optimizer" for x in m])
        self._convs = [(i, x.conv) for i, x in enumerate(m) if x.conv is not None]

    def columns(self, batch: int, base: dict[str, int], optimizer_temporaries: int) -> np.ndarray:
        """(moments, categories) bytes at ``batch``; ``base``: bytes alive throughout by category."""
        held = np.zeros(len(self.kept) + 1, np.int64)
        held[1:] = np.cumsum([s.nbytes(batch) for s in self.kept])
        out = np.zeros((len(self.moments), len(CATEGORIES)), np.int64)
        for name, value in base.items():
            out[:, CATEGORIES.index(name)] += value
        out[:, _TEMP] += self._per * batch + self._fixed + np.minimum(self._cap_per * batch, self._cap)
        out[:, _TEMP] += np.where(self._optimizer, optimizer_temporaries, 0)
        threads = torch.get_num_threads()
        for i, work in self._convs:  # the implementation PyTorch picks depends on the batch and threads
            out[i, _TEMP] += work.bytes(batch, threads)
        out[:, _GRAD] += self._grads
        out[:, CATEGORIES.index("saved activations")] += held[self._kept]
        return out

    def peak(self, batch: int, base: dict[str, int], optimizer_temporaries: int) -> tuple[int, int, dict]:
        """(peak bytes, index of the peak moment, bytes by category at it)."""
        out = self.columns(batch, base, optimizer_temporaries)
        sums = out.sum(axis=1)
        i = int(np.argmax(sums))
        return int(sums[i]), i, {c: int(out[i, k]) for k, c in enumerate(CATEGORIES)}


def _split(work) -> tuple:
    """(per sample, fixed, capped, conv) from what ``workspace`` returns (a ConvWork or a triple)."""
    if isinstance(work, tuple):
        return (*work, None)
    return 0, 0, None, work


def _leaves(root: Call) -> list[Call]:
    return [c for c in root.walk() if not c.children]


def _spans(root: Call, leaves: list[Call]) -> dict[int, tuple[int, int]]:
    """id(call) -> (index of its first leaf, index of its last leaf)."""
    position = {id(c): i for i, c in enumerate(leaves)}
    spans = {}

    def visit(call: Call) -> tuple[int, int]:
        if not call.children:
            spans[id(call)] = (position[id(call)],) * 2
        else:
            inner = [visit(c) for c in call.children]
            spans[id(call)] = (inner[0][0], inner[-1][1])
        return spans[id(call)]

    visit(root)
    del visit  # a recursive closure is a reference cycle
    return spans


@dataclass
class _Storage:
    size: int  # bytes per sample
    requires_grad: bool
    birth: float = float("inf")  # leaf position where it appears
    death: float = -1.0  # last leaf position where the forward pass still holds it
    last_reader: float = -1.0  # position of the last use that sends it a gradient (backward starts there)


def plan(root: Call, kept: list[Stored], keepers: list[Call], params: dict[int, int], workspace, residual,
         loss_per_sample: int) -> StepPlan:
    """The moments of one training step (module docstring).

    ``kept`` and ``keepers``: the kept tensors in order and the call that keeps each; ``params``:
    id(call) -> bytes of trainable parameters of that call's own module; ``workspace(call,
    backward)``: (bytes per sample, fixed bytes, capped or None) of the backend's scratch for a
    leaf; ``residual(call)``: whether the call adds its input to its output at its end;
    ``loss_per_sample``: bytes per sample the loss keeps.
    """
    leaves = _leaves(root)
    spans = _spans(root, leaves)
    store: dict[int, _Storage] = {}

    def storage(info) -> _Storage:
        return store.setdefault(info.storage, _Storage(info.nbytes, info.requires_grad))

    parents = {}
    for call in root.walk():
        for child in call.children:
            parents[id(child)] = call
    for call in root.walk():  # where each tensor appears and how long the forward pass holds it
        first, last = spans[id(call)]
        if call.output is not None:
            s = storage(call.output)
            s.birth = min(s.birth, last)
        for t in call.inputs:
            s = storage(t)
            s.death = max(s.death, last)  # a call holds its arguments until it returns
            if not call.children:
                s.last_reader = max(s.last_reader, first)
        if residual(call):  # the add at the end reads the input: its gradient arrives first in backward
            s = storage(call.input)
            s.last_reader = max(s.last_reader, last + 0.5)
    for call in root.walk():  # an output no later sibling reads is used by the parent's own code
        parent = parents.get(id(call))
        if parent is None or call.output is None:
            continue
        _, end = spans[id(call)]
        read_later = any(spans[id(c)][0] > end and any(t.storage == call.output.storage for t in c.inputs)
                         for c in parent.children)
        if not read_later:
            s = storage(call.output)
            s.death = max(s.death, spans[id(parent)][1])
            s.last_reader = max(s.last_reader, spans[id(parent)][1] + 0.5)
    n_leaves = len(leaves)
    if root.output is not None:  # the loss reads the logits
        s = storage(root.output)
        s.death = s.last_reader = n_leaves + 0.5
    input_storage = root.input.storage
    keeper_position = np.array([spans[id(c)][1] for c in keepers], np.int64)  # non-decreasing (post-order)
    kept_at = {s.storage: keeper_position[k] for k, s in enumerate(kept) if s.storage is not None}
    forward = np.zeros(n_leaves + 2, np.int64)  # difference arrays over leaf positions
    pending = np.zeros(n_leaves + 2, np.int64)
    for key, s in store.items():
        if key == input_storage or s.birth == float("inf"):
            continue
        birth = int(s.birth)
        last = min(int(s.death), kept_at[key] - 1) if key in kept_at else int(s.death)  # then kept, not temporary
        if last >= birth:
            forward[birth] += s.size
            forward[last + 1] -= s.size
        if s.requires_grad:
            upper = min(math.ceil(s.last_reader) - 1, n_leaves)
            if upper >= birth + 1:
                pending[birth + 1] += s.size
                pending[upper + 1] -= s.size
    forward, pending = np.cumsum(forward), np.cumsum(pending)
    kept_by = np.searchsorted(keeper_position, np.arange(n_leaves), side="right")

    moments: list[Moment] = []
    for i, leaf in enumerate(leaves):  # forward: what is alive while this layer runs
        per, fixed, capped, conv = _split(workspace(leaf, False))
        moments.append(Moment("forward", f"forward: {leaf.name}", int(kept_by[i]), int(forward[i]) + per, fixed,
                              capped or (0, 0), 0, conv))
    logits = store[root.output.storage].size if root.output is not None else 0
    moments.append(Moment("loss", "loss", len(kept), logits + loss_per_sample, 0, (0, 0), 0))
    grads = 0
    leaf_ids = {id(c) for c in leaves}
    for i in reversed(range(n_leaves)):  # backward: at this layer's backward
        leaf = leaves[i]
        grads += params.get(id(leaf), 0)
        temp = int(pending[i])  # gradients waiting for a tensor that later layers also read
        if leaf.output is not None and leaf.output.requires_grad:
            temp += leaf.output.nbytes  # the gradient arriving at its output
        aliases = leaf.output is not None and leaf.output.storage == leaf.input.storage  # Identity, a view
        if leaf.input.requires_grad and leaf.input.storage != input_storage and not aliases:
            temp += leaf.input.nbytes  # the gradient it computes for its input
        per, fixed, capped, conv = _split(workspace(leaf, True))
        moments.append(Moment("backward", f"backward: {leaf.name}", int(kept_by[i]), temp + per, fixed,
                              capped or (0, 0), grads, conv))
    grads += sum(v for k, v in params.items() if k not in leaf_ids)
    moments.append(Moment("optimizer", "optimizer step", 0, 0, 0, (0, 0), grads))
    return StepPlan(kept, moments)


__all__ = ["CATEGORIES", "Moment", "StepPlan", "plan"]
