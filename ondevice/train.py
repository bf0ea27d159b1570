"""A small, seeded training loop for the book's transfer experiments (chapter 2).

The TinyTL recipe, scaled down: Adam with a cosine learning-rate schedule, updating only the
parameters the transfer method left trainable (``requires_grad``). A BatchNorm whose scale and
shift are both frozen also keeps its running statistics frozen (it runs in eval mode): a frozen
layer stays bit-identical, buffers included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass
class History:
    """Per-epoch mean training loss and accuracy."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def _freeze_frozen_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in m.parameters()):
                m.eval()


def fit(model: nn.Module, loader, *, epochs: int = 1, lr: float = 1e-3, weight_decay: float = 0.0,
        seed: int = 0, device: str | torch.device | None = None, progress: bool = True) -> History:
    """Train ``model`` on ``loader`` (an iterable of (inputs, integer labels) batches).

    Only parameters with ``requires_grad`` are updated (Adam, cosine schedule over all steps).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters: apply a transfer method first")
    steps = epochs * len(loader)
    if steps == 0:
        raise ValueError("loader is empty")
    device = torch.device(device) if device is not None else trainable[0].device
    torch.manual_seed(seed)
    model.to(device).train()
    _freeze_frozen_batchnorm(model)
    optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = History()
    bar = tqdm(total=steps, desc="training", disable=not progress, leave=False)
    for _ in range(epochs):
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
    bar.close()
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
