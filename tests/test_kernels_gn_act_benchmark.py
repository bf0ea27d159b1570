"""benchmarks/gn_act.py: its CPU check mode runs the timed code path and writes no result."""

import pytest
import torch

from ondevice.notebook import load_benchmark


def load():
    return load_benchmark("gn_act")


def test_check_mode_runs_every_variant_and_writes_nothing(capsys):
    bench = load()
    before = sorted(bench.RESULTS.glob("*.json"))
    assert bench.main(["--check", "--activation", "hardswish"]) == 0
    out = capsys.readouterr().out
    assert all(v in out for v in ("fused exact", "fused detached", "eager")) and "check passed" in out
    assert sorted(bench.RESULTS.glob("*.json")) == before


def test_timing_without_a_gpu_is_refused_with_a_hint(monkeypatch):
    bench = load()
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench.main([])


def test_byte_floor_follows_the_design_notes_and_names_known_gpus():
    from kernels.roofline import byte_floor, bytes_per_element, hbm_bandwidth

    assert [bytes_per_element(4, m) for m in (None, "exact", "detached")] == [8.125, 12.125, 8.125]
    assert byte_floor((2, 8, 4, 4), torch.bfloat16, "exact")["total"] == 256 * (4.125 + 6.125)
    assert hbm_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12 and hbm_bandwidth("NVIDIA H200") == 4.8e12
    assert hbm_bandwidth("NVIDIA H100 PCIe") is None and hbm_bandwidth("Tesla T4") is None
    with pytest.raises(ValueError, match="backward must be None, 'exact' or 'detached'"):
        bytes_per_element(4, "approx")
