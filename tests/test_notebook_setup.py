"""ondevice.notebook.setup: seeds, sizes, and the Triton interpreter switch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ondevice.notebook import setup

PROBE = """
import json, os, sys
from ondevice.notebook import setup
cfg = setup()
import torch
print(json.dumps({"interp": os.environ.get("TRITON_INTERPRET"), "cfg_interp": cfg.triton_interpreter,
                  "fast": cfg.fast, "device": cfg.device, "cuda": torch.cuda.is_available(),
                  "triton_loaded": "triton" in sys.modules}))
"""


def run_probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "CI", "BOOK_FAST")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_switches_triton_to_the_interpreter_without_cuda():
    r = run_probe()
    assert r["triton_loaded"]
    assert r["device"] == ("cuda" if r["cuda"] else "cpu")
    assert r["cfg_interp"] == (not r["cuda"])
    assert r["interp"] == (None if r["cuda"] else "1")
    assert r["fast"] == (not r["cuda"])


def test_ci_variable_and_book_fast_choose_the_sizes():
    assert run_probe(CI="true")["fast"] is True
    assert run_probe(CI="true", BOOK_FAST="0")["fast"] is False


def test_seeds_make_runs_repeatable():
    setup(seed=3)
    a = torch.randn(4)
    setup(seed=3)
    assert torch.equal(a, torch.randn(4))


def test_size_picks_by_fast_flag(monkeypatch):
    monkeypatch.setenv("BOOK_FAST", "1")
    assert setup().size(full=64, fast=8) == 8
    monkeypatch.setenv("BOOK_FAST", "0")
    assert setup().size(full=64, fast=8) == 64


def test_bad_flag_names_the_variable(monkeypatch):
    monkeypatch.setenv("BOOK_FAST", "maybe")
    with pytest.raises(ValueError, match="BOOK_FAST"):
        setup()


def test_show_source_highlights_a_function_a_kernel_and_a_slice_of_a_file():
    from ondevice.memory import allocator
    from ondevice.memory.step import measure_step
    from ondevice.notebook import show_source
    from kernels.bits import _pack_kernel

    code = show_source(measure_step)
    assert code.data.startswith("def measure_step(") and "<span" in code._repr_html_()
    assert show_source(_pack_kernel).data.lstrip().startswith(("@", "def "))
    cut = show_source(allocator.SOURCE, start="class CountingAllocator", end="};")
    assert cut.data.splitlines()[0].startswith("class CountingAllocator") and cut.data.rstrip().endswith("};")


@pytest.mark.parametrize("obj, error, match", [
    (42, TypeError, "obj must be a function, a class, a Triton kernel or a path, got int"),
    ("no/such/file.py", ValueError, "obj must be .* an existing file"),
])
def test_show_source_names_a_bad_argument(obj, error, match):
    from ondevice.notebook import show_source

    with pytest.raises(error, match=match):
        show_source(obj)


def test_load_benchmark_names_the_script_and_refuses_an_unknown_one():
    from ondevice.notebook import load_benchmark

    bench = load_benchmark("gn_act")
    assert bench.__name__ == "gn_act_benchmark" and callable(bench.main)
    with pytest.raises(ValueError, match="name must be a script of .*benchmarks"):
        load_benchmark("no_such_benchmark")
