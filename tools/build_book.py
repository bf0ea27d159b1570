"""Build the HTML book so that any failing cell fails the build.

``jupyter-book build`` exits 0 when a cell raises; with ``-W`` it fails only on the build that
executed the notebook, because Sphinx's incremental build does not re-read an unchanged page
afterwards. So every build re-reads all pages (``--all``) with warnings as errors; execution
results are reused from Jupyter Book's cache (``_build/.jupyter_cache``) when a notebook is
unchanged. The cache does not know about the library, so it is dropped whenever a file under
``ondevice/``, ``kernels/`` or ``requirements.txt`` changes.

Before that, the in-browser what-if explorer (chapter 5) gets its files in ``_build/extra/explorer/``
(copied to the HTML root like the vendored JavaScript): ``js/explorer/*.js`` and the numbers
``python -m ondevice.whatif_data`` precomputes with the memory engine (minutes on two
cores; redone only when the library or ``benchmarks/results/train_memory-*.json`` changed).
Notebooks run with ``BOOK_STATIC=1``, so ``ondevice.whatif.explorer()`` draws that explorer
instead of a widget whose saved controls would do nothing without a kernel.

Usage: ``python tools/build_book.py [SOURCE_DIR]`` (default: the repository root).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def library_digest() -> str:
    """Hash of everything a notebook's results depend on besides the notebook itself."""
    h = hashlib.sha256()
    files = sorted((ROOT / "ondevice").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))
    for path in files + [ROOT / "requirements.txt"]:
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def drop_stale_cache(source: Path) -> None:
    cache = source / "_build" / ".jupyter_cache"
    stamp = source / "_build" / "library.sha256"
    digest = library_digest()
    if cache.exists() and (not stamp.exists() or stamp.read_text() != digest):
        print("library changed since the last build: re-executing every notebook")
        shutil.rmtree(cache)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)


def write_explorer(source: Path) -> int:
    """The explorer's script and data under ``_build/extra/explorer/`` (data only when stale)."""
    out = source / "_build" / "extra" / "explorer"
    out.mkdir(parents=True, exist_ok=True)
    for js in sorted((ROOT / "js" / "explorer").glob("*.js")):
        shutil.copy2(js, out / js.name)
    measured = sorted((ROOT / "benchmarks" / "results").glob("train_memory-*.json"))
    h = hashlib.sha256(library_digest().encode())
    for path in measured:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    data, stamp = out / "whatif-data.js", out / "whatif-data.sha256"
    if data.exists() and stamp.exists() and stamp.read_text() == h.hexdigest():
        return 0
    cmd = [sys.executable, "-m", "ondevice.whatif_data", str(data)]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if code == 0:
        stamp.write_text(h.hexdigest())
    return code


def build(source: Path) -> int:
    drop_stale_cache(source)
    if write_explorer(source):
        print("error: the what-if explorer's data could not be computed", file=sys.stderr)
        return 1
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe), "build", str(source), "--builder", "html", "--all", "-W", "-n", "--keep-going"]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env={**os.environ, "BOOK_STATIC": "1"})


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
