"""Runtimes by name: where replicas run. A runtime module is imported only when selected
(docker needs its SDK); `ringlb.app` builds the one the settings name."""

from __future__ import annotations

from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure

__all__ = ["RunningReplica", "Runtime", "RuntimeFailure"]
