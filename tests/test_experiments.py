"""Transfer experiments: records agree with the engine, every row trains exactly its set,
intervals and verdicts are computed right, runs resume."""

from dataclasses import replace

import pytest
import torch

from ondevice.experiments import (CLAIMS, METHODS, Claim, Run, Setup, compare, interval, load, pareto, run,
                                  run_one, save, summarize, t_quantile, verdicts)

TINY = Setup(n_train=2, n_test=2, epochs=1, batch_size=4, resolution=32)


def test_a_run_records_memory_measured_and_estimated_flops_and_accuracy():
    names = ["FT-Last", "TinyTL-L+B", "TinyTL-L+B [detached, int8]", "MobileTL K=2"]
    runs = run(["new_classes"], names, seeds=[0], setup=TINY, progress=False)
    by = {r.method: r for r in runs}
    for r in runs:
        assert 0 <= r.accuracy <= 1 and r.seconds > 0 and r.trainable > 0 and len(r.train_curve) == 1
        assert r.measured_saved == r.saved_activations[r.trained_as]  # step_costs also asserts it
        assert r.flops["total"] == r.flops["forward"] + r.flops["backward"] > 0
    kernelized = by["TinyTL-L+B [detached, int8]"]
    assert kernelized.trained_as == "masked" and by["TinyTL-L+B"].trained_as == "pytorch"
    assert kernelized.measured_saved < by["TinyTL-L+B"].measured_saved  # it really keeps less
    assert kernelized.memory["paper"] == by["TinyTL-L+B"].memory["paper"]  # the same method in TinyTL's accounting
    assert by["FT-Last"].memory["paper"] < by["TinyTL-L+B"].memory["paper"]
    assert by["FT-Last"].flops["backward"] < by["TinyTL-L+B"].flops["backward"]
    again = run_one("new_classes", "FT-Last", 0, TINY)
    assert again.accuracy == by["FT-Last"].accuracy  # seeded


def test_runs_resume_from_their_file(tmp_path):
    path = tmp_path / "runs.json"
    first = run(["digits"], ["FT-Last"], seeds=[0], setup=TINY, progress=False, path=path, facts={"command": "a"})
    both = run(["digits"], ["FT-Last"], seeds=[0, 1], setup=TINY, progress=False, path=path, facts={"command": "b"})
    assert both[0] == first[0] and [r.seed for r in both] == [0, 1]  # seed 0 kept, not rerun
    runs, setup, facts = load(path)
    assert runs == both and setup == TINY
    assert [(s["command"], s["runs"]) for s in facts["sessions"]] == [("a", 1), ("b", 1)]
    with pytest.raises(ValueError, match="holds runs of another setup"):
        run(["digits"], ["FT-Last"], seeds=[0], setup=replace(TINY, epochs=2), progress=False, path=path)


def test_runs_round_trip_through_json(tmp_path):
    r = Run("digits", "FT-Last", 0, 0.5, 0.6, 10, {"paper": 1}, {"paper": 0}, 0, {"total": 3}, 1.0)
    save([r], tmp_path / "x.json", TINY, command="test")
    runs, setup, extra = load(tmp_path / "x.json")
    assert runs == [r] and setup == TINY and extra == {"command": "test"}


def test_student_t_quantiles_and_intervals():
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)  # the 5-seed interval's factor
    assert t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-6)
    stats = pytest.importorskip("scipy.stats")
    for df in (2, 3, 7, 10, 29):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    mean, half = interval([0.5, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(12.706205 * 0.1414214 / 2 ** 0.5, rel=1e-6)
    assert interval([0.3]) == (0.3, 0.0)
    with pytest.raises(ValueError, match="need an int df >= 1"):
        t_quantile(0.975, 0)


def _runs(method, accuracies, task="t"):
    base = Run(task, method, 0, 0.0, 0.0, 1, {"paper": 1}, {}, 0, {"total": 1}, 1.0)
    return [replace(base, seed=s, accuracy=a) for s, a in enumerate(accuracies)]


def test_summary_and_pareto_front():
    base = Run("t", "a", 0, 0.5, 0.5, 1, {"paper": 10}, {}, 0, {"total": 1}, 1.0)
    runs = [base, replace(base, seed=1, accuracy=0.7),
            replace(base, method="b", memory={"paper": 5}, accuracy=0.55),
            replace(base, method="c", memory={"paper": 20}, accuracy=0.58)]
    rows = {s.method: s for s in summarize(runs)}
    assert rows["a"].runs == 2 and rows["a"].accuracy == pytest.approx(0.6)
    assert rows["a"].accuracy_std == pytest.approx(0.1414, abs=1e-4) and rows["b"].accuracy_std == 0
    assert rows["a"].accuracy_ci95 == pytest.approx(interval([0.5, 0.7])[1]) and rows["b"].accuracy_ci95 == 0
    assert [s.method for s in pareto(list(rows.values()))] == ["a", "b"]  # c: more memory, less accuracy than a


def test_claims_compare_paired_seeds_and_read_the_interval():
    runs = _runs("x", [0.80, 0.82, 0.84]) + _runs("y", [0.70, 0.73, 0.74, 0.9])  # y's seed 3 has no pair
    c = compare(runs, "t", "x", "y")
    assert c.seeds == 3 and c.difference == pytest.approx(9.6667, abs=1e-4)
    assert c.ci95 == pytest.approx(interval([10.0, 9.0, 10.0])[1])
    claim = Claim("x above y", "", "x", "y", 5.0)
    assert claim.verdict(c) == "replicated"  # the whole interval above 5 points
    assert replace(claim, threshold=12.0).verdict(c) == "not replicated"
    assert replace(claim, threshold=c.difference).verdict(c) == "inconclusive"
    with pytest.raises(ValueError, match="no seed on which both"):
        compare(runs, "t", "x", "z")
    assert {(v["claim"], v["verdict"]) for v in verdicts(runs, [claim])} == {("x above y", "replicated")}
    assert [c.a for c in CLAIMS] == ["TinyTL-L+B", "TinyTL-L+B", "MobileTL K=5"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="tasks must be in"):
        run(["cifar"], ["FT-Last"], [0], TINY, progress=False)
    with pytest.raises(ValueError, match="methods must be in"):
        run(["digits"], ["FT-Everything"], [0], TINY, progress=False)
    with pytest.raises(ValueError, match="seeds must be"):
        run(["digits"], ["FT-Last"], [], TINY, progress=False)


def _expected_trainable(method: str, name: str) -> bool:
    """Which parameters of the shipped backbones each experiment row trains (by name)."""
    head = name.startswith("classifier.")
    lite = ".lite." in name
    base = method.split(" [")[0].replace(" (BN, frozen stats)", "").replace(" (BN)", "").replace("RandomL", "L")
    if base == "FT-Full":
        return True
    if base == "FT-Last":
        return head
    if base == "FT-Norm+Last":
        return head or ".norm" in name or "final_norm" in name
    if base == "TinyTL-B":
        return head or name.endswith("bias")
    if base == "TinyTL-L":
        return head or lite
    if base == "TinyTL-L+B":
        return head or (lite and not name.endswith("final_norm.bias")) or (not lite and name.endswith("bias"))
    k = int(method.split("=")[1])  # MobileTL K=k: the top k of the 12 blocks, the final conv, the head
    top = name.startswith(tuple(f"blocks.{i}." for i in range(12 - k, 12)))
    if top or name.startswith("final_conv."):
        return not name.endswith(("expand.norm.weight", "depthwise.norm.weight", "final_conv.norm.weight"))
    return head


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_exactly_its_set_on_the_shipped_backbone(method):
    from ondevice.blocks import FrozenStatsBatchNorm2d
    from ondevice.data import loaders
    from ondevice.pretrained import load_pretrained
    from ondevice.train import fit

    spec = METHODS[method]
    torch.manual_seed(0)
    model = spec.apply(load_pretrained(spec.backbone, num_classes=16))
    pretrained = load_pretrained(spec.backbone).state_dict()
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains == {n for n, _ in model.named_parameters() if _expected_trainable(method, n)}
    lite = [n for n in trains if ".lite." in n and n in pretrained]
    if spec.name in ("tinytl_l", "tinytl_lb"):  # the pretrained lite branches; RandomL+B: fresh ones
        moved = [n for n in lite if not torch.equal(model.state_dict()[n], pretrained[n])]
        assert lite and (moved if spec.random_lite else not moved)
    if spec.frozen_stats:
        assert all(isinstance(m, FrozenStatsBatchNorm2d) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = {n: t.clone() for n, t in model.state_dict().items()}
    train, _ = loaders("new_classes", n_train=1, n_test=1, batch_size=8, resolution=32, seed=0)
    fit(model, train, epochs=1, lr=1e-2, progress=False)
    after = model.state_dict()
    for n, p in model.named_parameters():
        assert torch.equal(before[n], after[n]) != (n in trains), n  # frozen: bit-identical; trained: moved
    for module_name, m in model.named_modules():  # a norm with nothing trainable keeps its statistics
        if isinstance(m, torch.nn.BatchNorm2d) and (spec.frozen_stats or not any(p.requires_grad for p in m.parameters())):
            for b, _ in m.named_buffers():
                assert torch.equal(before[f"{module_name}.{b}"], after[f"{module_name}.{b}"]), (module_name, b)


def test_the_recorded_experiment_meets_its_setup():
    """benchmarks/results/transfer.json, which chapter 5 reads: every row on both tasks with at
    least 5 seeds, 100 training images per class, intervals and verdicts as the runs give them."""
    import json

    from ondevice.experiments import RECORDED, TASKS
    from ondevice.pretrained import manifest

    runs, setup, facts = load(RECORDED)
    data = json.loads(RECORDED.read_text())
    assert setup.n_train >= 100 and set(TASKS) == {"digits", "new_classes"}
    seeds = {}
    for r in runs:
        seeds.setdefault((r.task, r.method), set()).add(r.seed)
        assert r.measured_saved == r.saved_activations[r.trained_as] and len(r.train_curve) == setup.epochs
    assert set(seeds) == {(t, m) for t in TASKS for m in METHODS} and min(map(len, seeds.values())) >= 5
    assert data["summary"] == [json.loads(json.dumps(s.__dict__)) for s in summarize(runs)]
    assert all(s["accuracy_ci95"] > 0 for s in data["summary"])
    assert data["verdicts"] == verdicts(runs) and len(data["verdicts"]) == len(CLAIMS) * len(TASKS)
    assert {v["verdict"] for v in data["verdicts"]} <= {"replicated", "not replicated", "inconclusive"}
    assert all(s["command"].startswith("python benchmarks/transfer.py") and s["machine"]["cpus"] >= 1
               for s in facts["sessions"])
    for entry in manifest().values():  # the backbones the runs started from were trained at this resolution
        assert entry["config"]["resolution"] == setup.resolution
