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


def _expected_trainable(method: str, name: str) -> bool:
    """Which parameters of the shipped backbones each experiment row trains (by name)."""
    head = name.startswith("classifier.")
    lite = ".lite." in name
    if method in ("FT-Full", "FT-Full (BN)"):
        return True
    if method in ("FT-Last", "FT-Last (BN)"):
        return head
    if method == "FT-Norm+Last":
        return head or ".norm" in name or "final_norm" in name
    if method == "TinyTL-B":
        return head or name.endswith("bias")
    if method == "TinyTL-L":
        return head or lite
    if method == "TinyTL-L+B":
        return head or (lite and not name.endswith("final_norm.bias")) or (not lite and name.endswith("bias"))
    k = int(method.split("=")[1])  # MobileTL K=k: the top k of the 12 blocks, the final conv, the head
    top = name.startswith(tuple(f"blocks.{i}." for i in range(12 - k, 12)))
    if top or name.startswith("final_conv."):
        return not name.endswith(("expand.norm.weight", "depthwise.norm.weight", "final_conv.norm.weight"))
    return head


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_exactly_its_set_on_the_shipped_backbone(method):
    import torch

    from ondevice.data import loaders
    from ondevice.pretrained import load_pretrained
    from ondevice.train import fit

    spec = METHODS[method]
    model = spec.apply(load_pretrained(spec.backbone, num_classes=16))
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains == {n for n, _ in model.named_parameters() if _expected_trainable(method, n)}
    before = {n: t.clone() for n, t in model.state_dict().items()}
    train, _ = loaders("target", n_train=1, n_test=1, batch_size=8, seed=0)
    fit(model, train, epochs=1, lr=1e-2, progress=False)
    after = model.state_dict()
    for n, p in model.named_parameters():
        assert torch.equal(before[n], after[n]) != (n in trains), n  # frozen: bit-identical; trained: moved
    for module_name, m in model.named_modules():  # a norm with nothing trainable keeps its statistics
        if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
            for b, _ in m.named_buffers():
                assert torch.equal(before[f"{module_name}.{b}"], after[f"{module_name}.{b}"]), (module_name, b)
