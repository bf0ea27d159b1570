"""The book's library: memory accounting, notebook setup and plotting (design.md §2).

Chapters and labs import from here; this package imports from :mod:`kernels`, never the
other way round.
"""

__version__ = "0.1.0"
