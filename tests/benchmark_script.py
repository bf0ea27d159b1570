"""Load a script of benchmarks/ as a module, as `python benchmarks/<name>.py` would see it."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module named ``<name>_benchmark``. The scripts import their
    ``common`` module from their folder, which is on ``sys.path`` while the script loads; the
    module is registered in ``sys.modules`` (dataclasses look their module up there)."""
    script = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
