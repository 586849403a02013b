"""release_free_memory gives freed heap pages back to the OS (glibc's malloc_trim): memory
freed below a live allocation stays resident until it is called."""

from __future__ import annotations

import psutil

from trainers.runtime.memory import release_free_memory


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_freed_heap_pages_below_a_live_block_are_returned() -> None:
    release_free_memory()
    chunks = [bytearray(100_000) for _ in range(2000)]  # ~200 MB of heap blocks (< mmap threshold)
    for c in chunks:
        c[::4096] = b"x" * len(c[::4096])  # touch every page
    pin = bytearray(100_000)  # a live block above them: the heap's top cannot shrink
    pin[0] = 1
    before = _rss_mb()
    del chunks
    freed = _rss_mb()
    assert freed > before - 50  # free() alone keeps the pages resident
    assert release_free_memory()
    after = _rss_mb()
    assert after < freed - 100, (before, freed, after)
    assert pin[0] == 1
