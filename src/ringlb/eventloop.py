"""Event loop selection: uvloop when installed, the standard loop otherwise."""

from __future__ import annotations

import asyncio
import resource


def install_fast_loop() -> str:
    """Installs uvloop's policy when available; returns the loop's name."""
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def raise_fd_limit() -> None:
    """Raises the soft open-file limit to the hard one: a balancer holds many sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
