"""Runtimes by name. A runtime module is imported only when selected (docker needs its SDK)."""

from __future__ import annotations

from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure


def make_runtime(name: str, **options: object) -> Runtime:
    """Returns the runtime registered as `name`."""
    if name == "process":
        from ringlb.runtimes.process import ProcessRuntime

        return ProcessRuntime(**options)  # type: ignore[arg-type]
    raise ValueError(f"runtime: unknown runtime {name!r}")


__all__ = ["RunningReplica", "Runtime", "RuntimeFailure", "make_runtime"]
