"""benchmarks/kernelize.py: its quick mode runs the whole code path and records what it measured."""

import json

from ondevice.notebook import load_benchmark


def test_quick_run_records_measured_bytes_equal_to_the_masked_estimate(tmp_path):
    bench = load_benchmark("kernelize")
    assert bench.main(["--quick", "--steps", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("kernelize-quick-*.json")
    record = json.loads(path.read_text())
    assert record["quick"] and record["machine"]["torch"] and len(record["rows"]) == 3
    for row in record["rows"]:
        assert row["stock"]["measured"] == row["stock"]["estimate"]
        for mode in ("exact", "detached"):
            k = row["kernelized"][mode]
            assert k["measured"] == k["estimate"] == k["measured_8bit"] <= row["stock"]["measured"]
            assert k["params_8bit"] == k["estimate_params_8bit"] <= k["params"]  # equal when nothing is frozen
            assert k["step_s"] > 0
    tinytl_b = next(r for r in record["rows"] if r["method"] == "TinyTL-B")
    assert tinytl_b["kernelized"]["exact"]["params_8bit"] < tinytl_b["kernelized"]["exact"]["params"] / 3
