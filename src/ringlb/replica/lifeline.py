"""Ties a child process's life to its parent's: the child dies when the balancer dies.

Linux's parent-death signal (prctl PR_SET_PDEATHSIG) fires even when the parent is killed
with SIGKILL, which no handler in the parent could catch. The child arms it itself, then
checks that the parent it was started by is still its parent, closing the race where the
parent died between fork and prctl.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "RINGLB_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Arms the parent-death signal when started by a balancer; exits if it is already gone."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(expected):
        os._exit(0)
