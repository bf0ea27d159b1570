"""What the memory estimate returns (chapter 1): a per-layer row and the report of one
configuration, in bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rules import MEASURED


@dataclass(frozen=True)
class Layer:
    """One row of the per-layer table (``pytorch`` profile)."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    saved: int  # bytes this layer adds to the kept tensors (a shared tensor counts once)
    stored: tuple[str, ...]  # what it keeps and why

    @property
    def how(self) -> str:
        """``"measured, no rule"`` when the fallback measured (part of) what this layer keeps
        (:mod:`.fallback`), else ``"derived"`` (its rule, or the rules of its own calls)."""
        return MEASURED if any(s.startswith(MEASURED) for s in self.stored) else "derived"


@dataclass(frozen=True)
class MemoryReport:
    """Training memory in bytes.

    ``pytorch`` and ``masked`` profiles: ``total`` is the modelled peak of a whole training step
    (:mod:`.step_model`), ``at_peak`` what is alive at it by category (the categories of
    :func:`ondevice.memory.measure_step`; ``total == sum(at_peak.values())``), ``peak_at`` where
    it falls, ``peak`` the activation bytes at it (saved activations + temporaries).
    ``params``, ``param_grads``, ``optimizer_state`` and ``saved_activations`` are the full
    amounts (not all gradients need be alive at the peak). ``paper``: as TinyTL reports it,
    ``total = params + peak``.
    """

    profile: str
    input_shape: tuple[int, ...]
    params: int
    param_grads: int
    optimizer_state: int
    saved_activations: int
    peak: int
    total: int
    layers: list[Layer] = field(repr=False, default_factory=list)
    at_peak: dict = field(default_factory=dict)
    peak_at: str = ""

    def mb(self, name: str = "total") -> float:
        """A field in MB (10^6 bytes, as the papers report)."""
        return getattr(self, name) / 1e6

    def summary(self) -> str:
        parts = ["params", "param_grads", "optimizer_state", "saved_activations", "peak", "total"]
        return f"{self.profile} profile, input {self.input_shape}: " + ", ".join(
            f"{p} {self.mb(p):.2f} MB" for p in parts)

    def table(self, top: int | None = None) -> str:
        """The per-layer table as text (the ``top`` layers that keep the most, if given)."""
        rows = sorted(self.layers, key=lambda l: -l.saved)[:top] if top else self.layers
        lines = [f"{'layer':40s} {'type':18s} {'input':>20s} {'kept':>11s}  what and why"]
        for l in rows:
            lines.append(f"{l.name[:40]:40s} {l.type[:18]:18s} {str(l.input_shape):>20s} "
                         f"{l.saved:>11,d}  {'; '.join(l.stored)}")
        return "\n".join(lines)
