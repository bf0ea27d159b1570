"""benchmarks/gpu_suite.py: its dry run executes the whole plan on the CPU and writes every
result under the one folder; a failing step stops the run cleanly; no GPU, no real run."""

import json

import pytest

from ondevice.notebook import load_benchmark


def load():
    return load_benchmark("gpu_suite")


def test_dry_run_runs_every_step_and_writes_versions_results_and_logs(tmp_path):
    suite = load()
    assert suite.main([str(tmp_path), "--dry-run"]) == 0
    report = json.loads((tmp_path / "suite.json").read_text())
    assert list(report["steps"]) == [s.name for s in suite.plan(tmp_path, dry_run=True)]
    assert report["failed"] is None
    for name, step in report["steps"].items():
        assert step["status"] == ("skipped" if name == "train_memory" and not suite.TRAIN_MEMORY.exists() else "passed")
    versions = json.loads((tmp_path / "versions.json").read_text())
    assert {"device", "driver", "torch", "triton", "cuda"} <= versions.keys() and versions["dry_run"] is True
    assert sorted(p.name for p in tmp_path.glob("gn_act-*.json")) == sorted(
        p.name for p in tmp_path.glob("gn_act-*-check.json")) and len(list(tmp_path.glob("gn_act-*.json"))) == 2
    assert "testcase" in (tmp_path / "kernel-tests.xml").read_text()


def test_the_real_plan_puts_the_tests_on_cuda_and_calls_train_memory_as_agreed(tmp_path):
    steps = {s.name: s for s in load().plan(tmp_path, dry_run=False)}
    assert steps["kernel tests"].env == {"KERNELS_TEST_DEVICE": "cuda", "TRITON_INTERPRET": "0"}
    assert steps["train_memory"].argv[-4:] == ["--device", "cuda", "--out", str(tmp_path / "train_memory")]
    assert {"--dtype", "float32"} <= set(steps["gn_act float32"].argv) and "--check" not in steps["gn_act float32"].argv
    assert sum(s.limit_s for s in steps.values()) <= 8 * 60


def test_a_failing_step_stops_the_run_and_says_which(tmp_path, monkeypatch):
    suite = load()
    real_plan = suite.plan

    def broken(out, dry_run):
        steps = real_plan(out, dry_run)
        steps[0].argv = [steps[0].argv[0], "-c", "raise SystemExit(3)"]
        return steps

    monkeypatch.setattr(suite, "plan", broken)
    assert suite.main([str(tmp_path), "--dry-run"]) == 1
    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["failed"] == "kernel tests" and report["steps"]["kernel tests"]["message"] == "exit status 3"
    assert {s["status"] for n, s in report["steps"].items() if n != "kernel tests"} == {"not run"}


def test_without_a_gpu_the_real_run_is_refused_with_a_hint(tmp_path, monkeypatch):
    suite = load()
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        suite.main([str(tmp_path)])
