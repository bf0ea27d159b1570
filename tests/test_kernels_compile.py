"""kernels.compile_check: every kernel variant the launchers pick compiles for sm_90 and sm_80 with
the pinned Triton, without spills and within one SM; the recorded table is the one the code makes
today; the launch plan and its predicted time (kernels.launch_plan)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

from kernels import launch_plan
from kernels.compile_check import LIMITS
from kernels.roofline import byte_floor
from kernels.tiling import COLS, ROWS, row_grid

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "benchmarks" / "results" / "kernels-compile.json"
KERNELS = {"_row_stats_kernel", "_group_stats_kernel", "_norm_act_fwd_kernel", "_partials_kernel", "_vjp_means_kernel",
           "_exact_dx_kernel", "_detached_dx_kernel", "_pack_kernel", "_unpack_kernel", "_relu6_kernel"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "kernels-compile.json"
    proc = subprocess.run([sys.executable, "-m", "kernels.compile_check", "--out", str(out)], cwd=ROOT,
                          env=dict(os.environ, TRITON_INTERPRET="0"), capture_output=True, text=True, timeout=1200)
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc, json.loads(out.read_text())


def test_every_variant_compiles_for_hopper_and_ampere_without_spills_within_an_sm(table):
    proc, t = table
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {r["kernel"] for r in t["rows"]} == KERNELS
    assert sorted({r["arch"] for r in t["rows"]}) == [80, 90] and t["compiled"] == 2 * t["variants"]
    for r in t["rows"]:
        limit = LIMITS[r["arch"]]
        assert r["stack"] == 0 and r["local"] == 0, r
        assert r["registers"] <= limit["registers_per_thread"], r
        assert r["registers"] * 32 * r["num_warps"] <= limit["registers_per_sm"], r
        assert r["shared_static"] + r["shared_dynamic"] <= limit["shared_per_program"], r
        assert r["programs_per_sm"] >= 1 and not r["problems"], r


def test_the_sweep_reaches_every_option_the_launchers_take(table):
    rows = [r for r in table[1]["rows"] if r["arch"] == 90]

    def seen(kernel, key):
        return {(r["constexprs"].get(key) if key in r["constexprs"] else None) for r in rows if r["kernel"] == kernel}

    forward = [r for r in rows if r["kernel"] == "_norm_act_fwd_kernel"]
    assert seen("_norm_act_fwd_kernel", "ACT") == {0, 1, 2, 3} and seen("_norm_act_fwd_kernel", "WRITE_MASK") == {True, False}
    assert {r["types"].split("x_ptr:")[1].split(",")[0] for r in forward} == {"*fp32/16", "*fp16/16", "*bf16/16"}
    # the row length: 1 (a constant), a multiple of 16 (and of 32: whole mask words), neither
    assert {"HW:i32/16" in r["types"] for r in forward} == {True, False} and any("HW" in r["constexprs"] for r in forward)
    assert seen("_partials_kernel", "HAS_X") == {True, False} and seen("_partials_kernel", "TRUE_DERIVATIVE") == {True, False}
    assert seen("_exact_dx_kernel", "TRUE_DERIVATIVE") == {True, False}
    assert seen("_detached_dx_kernel", "HAS_STATS") == {True, False}


def test_the_recorded_table_is_what_the_pinned_triton_compiles_today(table):
    recorded, today = json.loads(RECORDED.read_text()), table[1]
    assert recorded["triton"] == triton.__version__
    keep = ("arch", "kernel", "num_warps", "constexprs", "types", "registers", "stack", "local", "shared_static",
            "shared_dynamic", "programs_per_sm")
    as_set = (lambda t: sorted(json.dumps({k: r[k] for k in keep}, sort_keys=True) for r in t["rows"]))
    assert as_set(recorded) == as_set(today)


def test_any_batch_and_group_count_gets_thousands_of_programs_not_one_per_slab():
    for shape in ((8, 96, 112, 112), (1, 96, 112, 112), (16, 192, 112, 112)):
        n, c, h, w = shape
        plan = row_grid(n * c, h * w, 132)
        assert plan.programs >= 4 * 132 > n * c // 8  # slabs: 96, 12, 384
        assert plan.programs == -(-n * c // ROWS) * -(-h * w // (COLS * plan.iters))


def test_predicted_time_is_never_below_the_byte_floor_and_counts_every_launch():
    recorded = json.loads(RECORDED.read_text())
    for gpu in launch_plan.GPUS.values():
        for shape in ((8, 96, 112, 112), (1, 96, 112, 112)):
            for mode, launches in (("exact", 8), ("detached", 5)):
                p = launch_plan.predict(shape, torch.float32, mode, gpu, recorded)
                floor_us = byte_floor(shape, torch.float32, mode)["total"] / gpu.hbm_bytes_per_s * 1e6
                assert len(p["launches"]) == launches and p["predicted_us"] > floor_us
                assert p["predicted_us"] >= launches * launch_plan.LAUNCH_US
                assert all(r["programs_per_sm"] for r in p["launches"] if not r["kernel"].startswith("torch"))
    assert launch_plan.gpu_for("NVIDIA H200") is launch_plan.GPUS["H200"]
    assert launch_plan.gpu_for("NVIDIA A100-SXM4-80GB") is launch_plan.GPUS["A100"]
    assert launch_plan.gpu_for("NVIDIA H100 PCIe") is None and launch_plan.gpu_for("Tesla T4") is None
    with pytest.raises(ValueError, match="backward must be 'exact' or 'detached'"):
        launch_plan.launch_plan((1, 8, 2, 2), torch.float32, "approx", launch_plan.GPUS["H200"])
