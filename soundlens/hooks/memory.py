"""Keep a long extraction's resident memory flat (Linux; a no-op elsewhere).

Two things grow a process's RSS during extraction without being held by soundlens:
- pages of the memory-mapped dataset files (`datasets` maps its Arrow files): every clip read
  stays resident although nothing refers to it again;
- heap the C allocator keeps after Python freed it.
After each shard, the dataset's mapped pages are released with ``madvise(MADV_DONTNEED)``
(clean, read-only file pages: a later read faults them back in from the page cache, unchanged)
and the heap is trimmed with ``malloc_trim``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterable

_MADV_DONTNEED = 4


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _mappings(paths: set[str]) -> list[tuple[int, int]]:
    """(start, length) of this process's read-only mappings of the given files."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() in paths and "w" not in parts[1]:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    out.append((lo, hi - lo))
    except OSError:
        return []
    return out


def release(files: Iterable[str | os.PathLike[str]]) -> None:
    """Drop resident pages of read-only mappings of ``files`` and trim the C heap."""
    if _LIBC is None:
        return
    paths = {os.path.realpath(p) for p in files}
    if paths:
        for start, length in _mappings(paths):
            _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_DONTNEED)
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def dataset_files(dataset: object) -> list[str]:
    """The Arrow files behind a `datasets.Dataset` (empty for in-memory data)."""
    files = getattr(dataset, "cache_files", None) or []
    return [f["filename"] for f in files if isinstance(f, dict) and "filename" in f]
