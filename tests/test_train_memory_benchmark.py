"""benchmarks/train_memory.py: its quick mode runs the whole code path (a fresh process per
configuration, measure_step, the estimate, the step time) and records it."""

import json

from ondevice.memory import CATEGORIES
from ondevice.notebook import load_benchmark


def test_quick_run_records_the_measured_step_beside_the_estimate(tmp_path):
    bench = load_benchmark("train_memory")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "train_memory-quick-cpu.json").read_text())
    assert record["quick"] and record["machine"]["torch"] and len(record["rows"]) == 3
    for row in record["rows"]:
        assert set(row["measured_at_peak"]) == set(row["estimated_at_peak"]) == set(CATEGORIES)
        assert sum(row["measured_at_peak"].values()) == row["measured_peak"]
        assert sum(row["estimated_at_peak"].values()) == row["estimated_peak"]
        assert abs(row["estimated_peak"] / row["measured_peak"] - 1) < 0.05  # test_step_model's tolerance
        assert row["step_s"] > 0 and row["measured_peak_at"] and row["largest_at_peak"]
    peaks = {(r["method"], r["variant"]): r["measured_peak"] for r in record["rows"]}
    assert peaks["tinytl_lb", "detached"] < peaks["ft_full", "stock"] / 2
