"""Give freed heap memory back to the operating system after a large, short-lived
allocation (a trial's models and environments, an ensemble replaced by a reload).

CPython frees objects into glibc's malloc, which keeps freed pages of its arenas for
reuse; torch and numpy allocate in many sizes from several threads, so after a trial with
a 512-wide network, or an ensemble replaced by one of other shapes, the resident size stays
near the largest ever needed. ``malloc_trim(0)`` (glibc, ``man 3 malloc_trim``) returns the
free pages at the top of every arena and the free whole pages inside them, so the resident
size follows what is live. Elsewhere (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Collect garbage, then ``malloc_trim(0)``; returns whether glibc released memory
    (False where there is no ``malloc_trim``)."""
    gc.collect()
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
