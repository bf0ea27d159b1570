"""Transfer experiments: records are consistent with the engine, summaries and fronts are right."""

from dataclasses import replace

import pytest

from ondevice.experiments import METHODS, Run, Setup, Summary, load, pareto, run, run_one, save, summarize

TINY = Setup(n_train=2, n_test=2, epochs=1, batch_size=4)


def test_a_run_records_memory_measured_and_estimated_flops_and_accuracy():
    runs = run(["color_shift"], ["FT-Last", "TinyTL-L+B", "MobileTL K=2"], seeds=[0], setup=TINY, progress=False)
    by = {r.method: r for r in runs}
    for r in runs:
        assert 0 <= r.accuracy <= 1 and r.seconds > 0 and r.trainable > 0
        assert r.measured_saved == r.saved_activations["pytorch"]  # run_one also asserts it
        assert r.flops["total"] == r.flops["forward"] + r.flops["backward"] > 0
    assert by["FT-Last"].memory["paper"] < by["TinyTL-L+B"].memory["paper"]
    assert by["FT-Last"].flops["backward"] < by["TinyTL-L+B"].flops["backward"]
    again = run_one("color_shift", "FT-Last", 0, TINY)
    assert again.accuracy == by["FT-Last"].accuracy  # seeded


def test_runs_round_trip_through_json(tmp_path):
    r = Run("digits", "FT-Last", 0, 0.5, 0.6, 10, {"paper": 1}, {"paper": 0}, 0, {"total": 3}, 1.0)
    save([r], tmp_path / "x.json", TINY, command="test")
    runs, setup, extra = load(tmp_path / "x.json")
    assert runs == [r] and setup == TINY and extra == {"command": "test"}


def test_summary_and_pareto_front():
    base = Run("t", "a", 0, 0.5, 0.5, 1, {"paper": 10}, {}, 0, {"total": 1}, 1.0)
    runs = [base, replace(base, seed=1, accuracy=0.7),
            replace(base, method="b", memory={"paper": 5}, accuracy=0.55),
            replace(base, method="c", memory={"paper": 20}, accuracy=0.58)]
    rows = {s.method: s for s in summarize(runs)}
    assert rows["a"].runs == 2 and rows["a"].accuracy == pytest.approx(0.6)
    assert rows["a"].accuracy_std == pytest.approx(0.1414, abs=1e-4) and rows["b"].accuracy_std == 0
    assert [s.method for s in pareto(list(rows.values()))] == ["a", "b"]  # c: more memory, less accuracy than a


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="tasks must be in"):
        run(["cifar"], ["FT-Last"], [0], TINY, progress=False)
    with pytest.raises(ValueError, match="methods must be in"):
        run(["digits"], ["FT-Everything"], [0], TINY, progress=False)
    with pytest.raises(ValueError, match="seeds must be"):
        run(["digits"], ["FT-Last"], [], TINY, progress=False)
    assert "MobileTL K=5" in METHODS and "TinyTL-L+B" in METHODS
