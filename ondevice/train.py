"""A small, seeded training loop for the book's transfer experiments (chapters 2 and 5).

The TinyTL recipe, scaled down: Adam with a cosine learning-rate schedule, updating only the
parameters the transfer method left trainable (``requires_grad``). A BatchNorm whose scale and
shift are both frozen also keeps its running statistics frozen (it runs in eval mode): a frozen
layer stays bit-identical, buffers included.

Long runs (pretraining, ``benchmarks/pretrain.py``) can be interrupted: with ``checkpoint=`` the
loop saves the model, the optimizer, the schedule, the history and the loader's shuffling state
after every epoch, and a later call with the same file continues from the last finished epoch
(the result is the same as an uninterrupted run's, up to float rounding of other thread counts).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass
class History:
    """Per-epoch mean training loss and accuracy; ``seconds`` of training so far (resumed runs
    add up their parts); ``extra``: what ``on_epoch`` returned each epoch (e.g. test accuracy)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    extra: list = field(default_factory=list)


def _freeze_frozen_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in m.parameters()):
                m.eval()


def _check_fit(epochs, lr, trainable, loader) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not trainable:
        raise ValueError("model has no trainable parameters: apply a transfer method first")
    steps = epochs * len(loader)
    if steps == 0:
        raise ValueError("loader is empty")
    return steps


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interruption never leaves half a checkpoint


def fit(model: nn.Module, loader, *, epochs: int = 1, lr: float = 1e-3, weight_decay: float = 0.0,
        seed: int = 0, device: str | torch.device | None = None, progress: bool = True,
        checkpoint: str | Path | None = None, on_epoch: Callable[[nn.Module], object] | None = None) -> History:
    """Train ``model`` on ``loader`` (an iterable of (inputs, integer labels) batches).

    Only parameters with ``requires_grad`` are updated (Adam, cosine schedule over all steps).
    ``on_epoch(model)``, if given, runs after every epoch; its return values are kept in
    ``History.extra`` (the training curves of ``benchmarks/pretrain.py`` record test accuracy so).
    ``checkpoint``: a file to save to after every epoch and to resume from (module docstring).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps = _check_fit(epochs, lr, trainable, loader)
    device = torch.device(device) if device is not None else trainable[0].device
    torch.manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = History()
    shuffle = getattr(loader, "generator", None)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["epochs"] != epochs or state["steps"] != steps:
            raise ValueError(f"checkpoint {str(checkpoint)!r} is of a run of {state['epochs']} epochs of "
                             f"{state['steps'] // state['epochs']} steps, not {epochs} of {len(loader)}: "
                             f"delete it to start afresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history = History(**state["history"])
        torch.set_rng_state(state["rng"])
        if shuffle is not None:
            shuffle.set_state(state["shuffle"])
    bar = tqdm(total=steps, initial=len(history.loss) * len(loader), desc="training",
               disable=not progress, leave=False)
    for _ in range(len(history.loss), epochs):
        start = time.perf_counter()
        model.train()
        _freeze_frozen_batchnorm(model)
        total_loss, correct, seen = 0.0, 0, 0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            logits = model(inputs)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.loss.append(total_loss / seen)
        history.accuracy.append(correct / seen)
        if on_epoch is not None:
            history.extra.append(on_epoch(model))
        history.seconds += time.perf_counter() - start
        if checkpoint is not None:
            _save(checkpoint, {"epochs": epochs, "steps": steps, "model": model.state_dict(),
                               "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                               "history": asdict(history), "rng": torch.get_rng_state(),
                               "shuffle": shuffle.get_state() if shuffle is not None else None})
    bar.close()
    model.train()
    _freeze_frozen_batchnorm(model)
    return history


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: str | torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``loader``."""
    first = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (first.device if first is not None else "cpu")
    was_training = model.training
    model.eval()
    correct = seen = 0
    for inputs, labels in loader:
        correct += (model(inputs.to(device)).argmax(1) == labels.to(device)).sum().item()
        seen += len(labels)
    model.train(was_training)
    if seen == 0:
        raise ValueError("loader is empty")
    return correct / seen
