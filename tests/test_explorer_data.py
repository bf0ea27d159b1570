"""The in-browser explorer's precomputed numbers (ondevice.whatif_data): every curve, at every
batch, is the engine's; every total the data gives is ondevice.whatif.answer's, to the byte; the
device presets subtract what they say; measured steps are read, and bad result files refused."""

import json
import random
from dataclasses import replace

import pytest

from ondevice.devices import KIB, MIB, PRESETS, PYTORCH, measure_runtime
from ondevice.whatif import (FALLBACK, MAX_BATCH, PARTS, Answer, Question, answer, curve_of, method_on,
                             methods_for)
from ondevice.whatif_data import (VARIANTS, at, encode, explorer_data, from_js, measured_rows, to_js,
                                  variant)

MODEL, RESOLUTIONS = "mobilenet_v3_small", (96, 128)


@pytest.fixture(scope="module")
def data():
    return explorer_data(models=[MODEL], resolutions=RESOLUTIONS, progress=False)


def parts_from(data, q):
    """What the page computes (js/explorer/whatif.js, answer): the parameters for the width, every
    other part from its curve."""
    m = data["models"][q.model]
    key = f"{q.method}|{variant(q)}"
    by_width = m["curves"][key][str(q.resolution)]
    curves = by_width.get(f"{q.optimizer}|{q.frozen_bits}", by_width[q.optimizer])
    return {k: m["params"][key][str(q.frozen_bits)] if k == "params" else at(curves[k], q.batch) for k, _ in data["parts"]}


def total_from(data, q):
    return sum(parts_from(data, q).values())


def test_encode_finds_lines_periods_and_bends():
    line = [100 + 7 * b for b in range(1, 129)]
    masks = [4 * -(-33 * b // 32) for b in range(1, 129)]  # 33 mask bits per sample, in int32 words
    bend = [max(1000, 30 * b) for b in range(1, 129)]  # the peak moves to another moment at b = 34
    squares = [b * b for b in range(1, 129)]
    for values, runs in ((line, [[0, 1, 7, 107]]), (masks, [[0, 32, 132, *masks[:32]]]),
                         (bend, [[0, 1, 0, 1000], [33, 1, 30, 1020]]), (squares, None)):
        code = encode(values)
        assert [at(code, b) for b in range(1, 129)] == values
        if runs is not None:
            assert code == runs


def test_every_part_is_the_engines_at_every_batch(data):
    m = data["models"][MODEL]
    assert m["methods"] == methods_for(MODEL) and [k for k, _ in data["parts"]] == list(PARTS)
    for method in m["methods"]:
        for var, (profile, backward) in VARIANTS.items():
            for r in RESOLUTIONS:
                for opt, bits in [(opt, bits) for opt in data["optimizers"] for bits in data["frozen_bits"]]:
                    q = Question(model=MODEL, method=method, resolution=r, profile=profile, backward=backward,
                                 optimizer=opt, frozen_bits=bits)
                    curve = curve_of(q)
                    for b in range(1, MAX_BATCH + 1):
                        here = replace(q, batch=b)
                        assert parts_from(data, here) == Answer(here, curve.report(b)).breakdown(), here


def test_totals_from_the_data_are_answer_to_the_byte(data):
    rng = random.Random(0)
    for _ in range(200):
        profile, backward = rng.choice(list(VARIANTS.values()))
        q = Question(model=MODEL, method=rng.choice(methods_for(MODEL)), resolution=rng.choice(RESOLUTIONS),
                     batch=rng.randint(1, MAX_BATCH), frozen_bits=rng.choice(data["frozen_bits"]),
                     optimizer=rng.choice(data["optimizers"]), profile=profile, backward=backward)
        assert total_from(data, q) == answer(q).total, q


def test_layers_are_the_per_layer_table_at_batch_1_in_call_order(data):
    m = data["models"][MODEL]
    for method in ("ft_full", "tinytl_b"):
        for var in ("pytorch", "masked-detached"):
            group = m["layers"][f"{method}|{var}"]
            profile, backward = VARIANTS[var]
            for r in RESOLUTIONS:
                q = Question(model=MODEL, method=method, resolution=r, batch=1, profile=profile, backward=backward)
                assert sum(group["v"][str(r)]) == answer(q).report.saved_activations
            assert len(set(group["i"])) == len(group["i"]) and m["names"][group["i"][0]].startswith("stem")
    stock, lean = m["layers"]["ft_full|pytorch"], m["layers"]["ft_full|masked-exact"]
    assert {m["types"][t] for t in stock["t"]} & {"GroupNorm", "Hardswish"}
    assert "GroupNormAct" in {m["types"][t] for t in lean["t"]}


def test_the_page_script_round_trips_and_carries_presets_and_fallbacks(data):
    text = to_js(data)
    assert text.startswith("// Written by") and from_js(text) == json.loads(json.dumps(data))
    assert to_js(data) == text  # deterministic (gzip without a time stamp)
    assert data["fallback"] == FALLBACK and data["max_batch"] == MAX_BATCH
    assert [d["budget"] for d in data["devices"]] == [d.budget for d in PRESETS.values()]
    assert data["defaults"] == Question().__dict__


def test_presets_subtract_their_deductions_from_the_ram():
    for device in PRESETS.values():
        assert device.budget == device.ram - sum(d.bytes for d in device.deductions) > 0
        assert device.ram_source and all(d.source for d in device.deductions)
    assert PRESETS["STM32F746 microcontroller (320 KB SRAM)"].budget == 256 * KIB  # MCUNetV3's budget
    pi = PRESETS["Raspberry Pi Zero 2 W (512 MB)"]
    assert pi.budget == (512 - 64 - 100 - 220) * MIB


def test_the_pytorch_runtime_figure_is_what_a_fresh_process_takes_here():
    measured = measure_runtime()
    assert abs(measured["RssAnon"] - PYTORCH.bytes) < 0.25 * PYTORCH.bytes, measured
    assert measured["VmRSS"] > measured["RssAnon"]  # the code pages the figure leaves out


def test_measured_steps_are_read_and_bad_files_refused(tmp_path):
    assert measured_rows(tmp_path) == {"files": [], "rows": []}
    row = {"network": MODEL, "method": "tinytl_b", "resolution": 96, "batch": 8, "optimizer": "adam",
           "frozen_bits": 8, "variant": "stock", "measured_peak": 123, "estimated_peak": 120}
    (tmp_path / "train_memory-h200.json").write_text(json.dumps({"device": "H200", "rows": [row]}))
    got = measured_rows(tmp_path)
    assert got["files"] == ["train_memory-h200.json"]
    assert got["rows"] == [{**row, "device": "H200", "file": "train_memory-h200.json"}]
    (tmp_path / "train_memory-cpu.json").write_text(json.dumps({"device": "cpu", "rows": [{"network": MODEL}]}))
    with pytest.raises(ValueError, match="train_memory-cpu.json: row 0 lacks method"):
        measured_rows(tmp_path)


def test_model_switch_policy_matches_the_page_data(data):
    for wanted, left in FALLBACK.items():
        assert method_on("resnet50", wanted) == left and left in methods_for("resnet50")
    assert method_on(MODEL, "tinytl_lb") == "tinytl_lb"
    assert replace(Question(), method=method_on("resnet50", "tinytl_l")).method == "ft_last"
