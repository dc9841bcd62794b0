"""Keep a collector process's memory near what its store holds, on glibc.

Events run up to Brain's 2.5 MiB, and each passes through several buffers of that size
(body, text, parsed, stored JSON) in whichever of the server's threads takes it. glibc
serves such buffers with ``mmap`` and gives them back on free, until the first one is
freed: it then raises its threshold to that size and serves the next from the heap of
that thread's arena, where freed space is kept. With a dozen arenas that held 2.5 MiB
buffers, a collector storing 128 MiB measured 454 MiB of RSS. Fixing the threshold
(``M_MMAP_THRESHOLD``) keeps big buffers in ``mmap``: 218 MiB for the same load.

Only the collector's own process calls this (its command-line entry points): in a test
process or an app, the allocator's settings are not the collector's to change.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
_THRESHOLD = 128 * 1024  # glibc's initial threshold, kept for good


def keep_big_buffers_out_of_the_heap() -> bool:
    """Fix glibc's mmap threshold; False where there is no glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
