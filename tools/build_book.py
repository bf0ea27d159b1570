"""Build the HTML book so that any failing cell fails the build.

``jupyter-book build`` exits 0 when a cell raises; with ``-W`` it fails only on the build that
executed the notebook, because Sphinx's incremental build does not re-read an unchanged page
afterwards. So every build re-reads all pages (``--all``) with warnings as errors; execution
results are reused from Jupyter Book's cache (``_build/.jupyter_cache``) when a notebook is
unchanged. The cache does not know about the library, so it is dropped whenever a file under
``ondevice/``, ``kernels/`` or ``requirements.txt`` changes.

Usage: ``python tools/build_book.py [SOURCE_DIR]`` (default: the repository root).
"""

from __future__ import annotations

import hashlib
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


def build(source: Path) -> int:
    drop_stale_cache(source)
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe), "build", str(source), "--builder", "html", "--all", "-W", "-n", "--keep-going"]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
