"""The leader lease of several balancers on one swarm, as labels of a Swarm service.

The service (`<owner>-lease`, no task: 0 replicas of the replica image, never run) exists
only for its labels and its `Version.Index`: Swarm refuses an update that carries a stale
version ("update out of sequence"), which is the compare-and-swap the lease needs
(`ringlb.control.lease`). Raft makes that write consistent across every manager.
"""

from __future__ import annotations

import logging
from typing import Any

from docker.errors import APIError, NotFound
from docker.types import ContainerSpec, ServiceMode, TaskTemplate

import docker
from ringlb.runtimes.engine import OWNER_LABEL, ROLE_LABEL, Engine

log = logging.getLogger("ringlb.runtime.swarm")

LEASE_ROLE = "lease"
FIELD_PREFIX = "ringlb.lease."


class SwarmLeaseStore:
    def __init__(self, engine: Engine, owner: str) -> None:
        self._engine = engine
        self._owner = owner
        self.service = f"{owner}-lease"

    async def read(self) -> tuple[dict[str, str], int]:
        return await self._engine.call("reading the lease", self._read)

    async def write(self, fields: dict[str, str], version: int) -> bool:
        return await self._engine.call("writing the lease", self._write, fields, version)

    def _read(self, api: docker.APIClient) -> tuple[dict[str, str], int]:
        info = self._inspect(api)
        labels = info["Spec"].get("Labels") or {}
        fields = {
            k[len(FIELD_PREFIX) :]: v for k, v in labels.items() if k.startswith(FIELD_PREFIX)
        }
        return fields, info["Version"]["Index"]

    def _write(self, api: docker.APIClient, fields: dict[str, str], version: int) -> bool:
        labels = self._labels() | {FIELD_PREFIX + k: v for k, v in fields.items()}
        try:
            api.update_service(
                self.service, version, labels=labels, mode=ServiceMode("replicated", replicas=0),
                fetch_current_spec=True,
            )  # fmt: skip
        except APIError as exc:
            if "out of sequence" in str(exc.explanation or exc):
                return False  # someone wrote since we read: the CAS failed
            raise
        return True

    def _inspect(self, api: docker.APIClient) -> dict[str, Any]:
        """Returns the lease service, created (with no lease in it) when missing."""
        try:
            return api.inspect_service(self.service)
        except NotFound:
            pass
        log.info("creating the lease service %s", self.service)
        try:
            api.create_service(
                TaskTemplate(ContainerSpec(self._engine.image, command=["true"])),
                name=self.service,
                labels=self._labels(),
                mode=ServiceMode("replicated", replicas=0),
            )
        except APIError as exc:
            if exc.status_code != 409:  # 409: another balancer created it first
                raise
        return api.inspect_service(self.service)

    def _labels(self) -> dict[str, str]:
        return {OWNER_LABEL: self._owner, ROLE_LABEL: LEASE_ROLE}
