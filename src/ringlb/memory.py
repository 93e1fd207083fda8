"""The process's heap: keeping the cyclic collector off what start-up built, and giving
freed memory back to the system after a burst of connections.

A full collection walks every object the collector tracks. In a started balancer that is
about 40,000 objects (modules, classes, functions, settings, the first tables), which live
as long as the process, and walking them takes 6 to 13 ms on the event loop: every request
of that moment waits as long, ten times what a routing table rebuild may cost (issue 14).
`freeze_start_up_heap` hands them to the collector's permanent generation once start-up is
done, so later collections walk only what came after (connections, requests).

After a burst of connections, what they left in reference cycles waits for the collector
(a connection breaks its own cycle when it closes, but not every library object does). And
CPython hands buffers above 512 bytes to malloc: after thousands of connections close,
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


def freeze_start_up_heap() -> None:
    """Collects start-up's garbage, then freezes every object left: the collector never
    walks them again. Called once per process, when it starts serving (not in libraries or
    tests that start balancers in a process of their own). A frozen object is still freed
    when its last reference goes; only a cycle of frozen objects would outlive its use, and
    start-up makes few of those and makes them once."""
    gc.collect()
    gc.freeze()


def give_back_memory() -> bool:
    """Frees what only the cyclic collector would, then returns free heap memory to the
    system; returns whether the C library gave any back (False where it cannot)."""
    gc.collect()
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
