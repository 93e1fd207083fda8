"""The Docker engine as the docker and swarm runtimes share it: one client, one deadline per
call, one place where engine errors become RuntimeFailure, one rule for "already gone",
and the containment every replica gets.

The Docker SDK is blocking: every call runs in a worker thread (`asyncio.to_thread`) with a
socket timeout, so an unreachable or hung daemon becomes a RuntimeFailure, never a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import RequestException

import docker
from ringlb.runtimes.base import RuntimeFailure

REPLICA_PORT = 5000
OWNER_LABEL = "ringlb.owner"
ROLE_LABEL = "ringlb.role"
RID_LABEL = "ringlb.rid"
REPLICA_ROLE = "replica"
# What may be left of a failed call's thread: the errors the SDK and its transport raise.
ENGINE_ERRORS = (DockerException, RequestException, OSError)


def replica_command(name: str) -> list[str]:
    """Returns the command of replica `name` in the ringlb image."""
    return ["ringlb", "replica", "--id", name, "--port", str(REPLICA_PORT)]


def replica_environment(name: str) -> dict[str, str]:
    # No bytecode cache: the root filesystem may be read-only.
    return {"SERVER_ID": name, "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(frozen=True, slots=True)
class Containment:
    """What a replica may use and do. The balancer holds the Docker socket, so what it
    starts must be boxed in: bounded memory, CPU and processes, no capabilities, no
    privilege gain, and (when the replica allows it) a read-only root filesystem. The
    values come from the settings (docker_memory, docker_cpus, ...)."""

    memory: str
    cpus: float
    pids: int
    read_only: bool

    def host_config(self, api: docker.APIClient, network: str) -> dict[str, Any]:
        """Returns the host config of a replica container on `network`."""
        return api.create_host_config(
            network_mode=network,
            mem_limit=self.memory,
            nano_cpus=int(self.cpus * 1e9),
            pids_limit=self.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            read_only=self.read_only,
            tmpfs={"/tmp": "size=16m"} if self.read_only else None,
        )

    def memory_bytes(self) -> int:
        """Returns `memory` ("256m") in bytes, as the service API wants it."""
        units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
        text = self.memory.lower()
        if text[-1] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)


def is_gone(exc: BaseException) -> bool:
    """True when a removal failed only because the object is gone or going: "No such
    container" (404), or 409 "removal ... is already in progress" (its owner removes it)."""
    if isinstance(exc, NotFound):
        return True
    return (
        isinstance(exc, APIError)
        and exc.status_code == 409
        and "already in progress" in str(exc.explanation or exc)
    )


def short(exc: BaseException) -> str:
    """Returns the first line of an SDK error, which can be very long."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Engine:
    """A connection to one Docker engine, made on first use and again after a failure."""

    def __init__(self, image: str, api_timeout: float, base_url: str | None = None) -> None:
        self.image = image  # named in the error when it is missing
        self._api_timeout = api_timeout
        self._base_url = base_url
        self._api: docker.APIClient | None = None

    def client(self) -> docker.APIClient:
        """Returns a connected API client (created on first use; raises DockerException)."""
        if self._api is None:
            kwargs = docker.utils.kwargs_from_env()
            if self._base_url:
                kwargs["base_url"] = self._base_url
            # version="auto" asks the engine for its API version: the first call that can fail.
            self._api = docker.APIClient(version="auto", timeout=self._api_timeout, **kwargs)
        return self._api

    def reset(self) -> None:
        """Forgets the client: the next call reconnects (the engine may have restarted)."""
        self._api = None

    async def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs `fn(client, *args)` in a thread; maps engine trouble to RuntimeFailure."""
        try:
            return await asyncio.to_thread(lambda: fn(self.client(), *args))
        except RuntimeFailure:
            raise
        except ImageNotFound:
            raise RuntimeFailure(
                f"Docker image '{self.image}' not found (build it with `make build`)"
            ) from None
        except ENGINE_ERRORS as exc:
            self.reset()
            raise RuntimeFailure(f"Docker engine error while {what}: {short(exc)}") from None

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await asyncio.to_thread(api.close)
