"""Giving freed memory back to the system after a burst of connections.

A closed connection is a reference cycle (a protocol and its httptools parser point at
each other), freed only when the cyclic collector runs, which after a burst may be long
after. And CPython hands buffers above 512 bytes to malloc. After thousands of connections close,
glibc keeps the freed memory in its heaps (it returns only the top of a heap by itself),
so a balancer that lived through an attack would stay at its peak. `malloc_trim(0)` hands
back every free page. It costs a walk of the free lists, so the data plane calls it only
after many connections have closed, and at most every few seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def _load_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to do


_malloc_trim = _load_trim()


def give_back_memory() -> bool:
    """Frees what only the cyclic collector would, then returns free heap memory to the
    system; returns whether the C library gave any back (False where it cannot)."""
    gc.collect()
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
