"""soundlens: look inside speech and music foundation models.

Four capabilities in one data flow: ``hooks`` (read and write activations at named sites),
``probing`` (where does a concept live), ``steering`` (change what a generator makes) and
``memorization`` (does a generator replicate its training data). ``models`` and ``data``
serve them.
"""

__version__ = "0.1.0"
