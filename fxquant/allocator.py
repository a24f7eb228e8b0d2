"""Freed tensor memory goes back to the system, so a process's peak is what it holds at once.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB): later
blocks of that size come from heaps and per-thread arenas, which keep what is freed for reuse and
fragment. Over the calibration of a large model a process then sits on gigabytes it no longer uses
(vit_large, one batch: 2.7 GB above what it holds). A fixed threshold keeps every block of 1 MiB or
more in its own mapping, unmapped when freed; smaller blocks are unaffected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3   # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory() -> bool:
    """Set glibc's mmap threshold for this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "gnu_get_libc_version"):   # musl and others: their own allocators
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
