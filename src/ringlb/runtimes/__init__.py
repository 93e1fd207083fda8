"""Runtimes by name. A runtime module is imported only when selected (docker needs its SDK)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure

if TYPE_CHECKING:
    from ringlb.config import Settings


def make_runtime(settings: Settings) -> Runtime:
    """Returns the runtime selected by `settings.runtime`, configured from `settings`."""
    if settings.runtime == "process":
        from ringlb.runtimes.process import ProcessRuntime

        return ProcessRuntime(command=settings.replica_command)
    if settings.runtime == "docker":
        from ringlb.runtimes.docker import Containment, DockerRuntime

        return DockerRuntime(
            image=settings.docker_image,
            network=settings.docker_network,
            owner=settings.docker_owner,
            api_timeout=settings.docker_api_timeout,
            containment=Containment(
                memory=settings.docker_memory,
                cpus=settings.docker_cpus,
                pids=settings.docker_pids,
                read_only=settings.docker_read_only,
            ),
        )
    raise ValueError(f"runtime: unknown runtime {settings.runtime!r}")


__all__ = ["RunningReplica", "Runtime", "RuntimeFailure", "make_runtime"]
