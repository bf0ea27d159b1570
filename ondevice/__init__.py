"""The book's library: memory accounting, notebook setup and plotting (README.md,
"Layout").

Chapters and labs import from here; this package imports from :mod:`kernels`, never the
other way round. ``ondevice.kernelize`` (:func:`ondevice.lean.kernelize`, chapter 4) is loaded
on first use, so that ``import ondevice`` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("kernelize", "kernelize_report"):
        from . import lean

        return getattr(lean, name)
    raise AttributeError(f"module 'ondevice' has no attribute {name!r}")
