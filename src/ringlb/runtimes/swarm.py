"""`swarm` runtime: each replica is a Docker Swarm service of one task, anywhere in the cluster.

A replica `NAME` is the service `NAME` (or an internal name when `NAME` is not a valid
service name; the contract name is always in the `ringlb.name` label) whose one task runs
`ringlb replica --id NAME --port 5000` with hostname and network alias `NAME` and
`SERVER_ID=NAME` on an attachable overlay network, endpoint mode dnsrr (no virtual IP:
IPVS is not everywhere), published nowhere, restart condition none: the balancer, not
Swarm, replaces a dead replica, under a new name, as the contract says. The balancer
reaches a replica at its task's address on the overlay, so it must be attached to it.

Swarm reports no task events (moby#37403), so deaths are found by looking at the tasks
every `poll_interval` (a task no longer running, or on a node that is down), besides the
heartbeats and the proxy's failed requests. Services carry the owner, role, ring id and
name labels: a restarted balancer adopts them. The scheduler puts each new task on the
node with the fewest tasks, so one-task services spread over the nodes by themselves;
`constraints` narrow where they may go, and a node that seems gone is avoided for a while
(`ringlb.runtimes.placement`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from docker.errors import APIError, NotFound
from docker.types import (
    ContainerSpec,
    EndpointSpec,
    Mount,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)
from docker.types import Placement as DockerPlacement

import docker
from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure
from ringlb.runtimes.engine import (
    OWNER_LABEL,
    REPLICA_PORT,
    REPLICA_ROLE,
    RID_LABEL,
    ROLE_LABEL,
    Containment,
    Engine,
    is_gone,
    replica_command,
    replica_environment,
)
from ringlb.runtimes.placement import Placement
from ringlb.runtimes.swarm_lease import SwarmLeaseStore

log = logging.getLogger("ringlb.runtime.swarm")

NAME_LABEL = "ringlb.name"  # the contract name, whatever the service is called
# What Swarm accepts as a service name: stricter than the contract's hostnames.
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
SERVICE_NAME_MAX = 63
# Task states on the way to running, and running itself; any other is the end of a task.
STARTING_STATES = frozenset(
    ("new", "allocated", "pending", "assigned", "accepted", "ready", "preparing", "starting")
)
START_POLL = 0.1  # how often a starting task is looked at (s)
GONE_WAIT = 30.0  # longest wait for a removed service's task to stop (s)


def service_name(name: str) -> str:
    """Returns the service name of replica `name`: itself when Swarm accepts it, else a
    stable internal one (the contract name lives in the labels)."""
    if SERVICE_NAME.match(name) and len(name) <= SERVICE_NAME_MAX:
        return name
    return "ringlb-" + hashlib.sha256(name.encode()).hexdigest()[:16]


def task_address(task: dict[str, Any], network: str) -> str | None:
    """Returns the task's IP on `network`, or None when it has none (yet)."""
    for attachment in task.get("NetworksAttachments") or []:
        if attachment["Network"]["Spec"]["Name"] == network and attachment.get("Addresses"):
            return attachment["Addresses"][0].split("/")[0]
    return None


def latest_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(tasks, key=lambda t: t["CreatedAt"], default=None)


class SwarmRuntime(Runtime):
    name = "swarm"

    def __init__(
        self,
        engine: Engine,
        network: str,
        owner: str,
        containment: Containment,
        constraints: list[str],
        poll_interval: float,
        image_by_id: bool,
        start_timeout: float,
    ) -> None:
        self._engine = engine  # the engine of a manager node
        self._network = network
        self._owner = owner
        self._containment = containment
        self._placement = Placement(constraints)
        self._poll_interval = poll_interval
        self._image_by_id = image_by_id
        self._start_timeout = start_timeout
        self._network_lock = threading.Lock()
        self._network_ready = False
        # name -> service id of every replica we run. A name leaves this map *before* its
        # service is removed, so the poller never reports a removal we asked for.
        self._live: dict[str, str] = {}
        self._lease_store = SwarmLeaseStore(engine, owner)

    # -- start ---------------------------------------------------------------------------

    async def start(self, name: str, rid: int) -> RunningReplica:
        if name in self._live:
            raise RuntimeFailure(f"service of '{name}' is already running")
        service_id = await self._engine.call(f"starting '{name}'", self._create, name, rid)
        try:
            task = await self._wait_running(name, service_id)
        except BaseException:
            await self._remove_quietly(service_id)
            raise
        ip = task_address(task, self._network)
        self._live[name] = service_id
        log.info(
            "started service %s (%s) on node %s at %s on %s",
            name,
            service_id[:12],
            task.get("NodeID", "?")[:12],
            ip,
            self._network,
        )
        return RunningReplica(name=name, rid=rid, host=ip or "", port=REPLICA_PORT)

    def _create(self, api: docker.APIClient, name: str, rid: int) -> str:
        self._ensure_network(api)
        try:
            return self._create_service(api, name, rid)
        except APIError as exc:
            if exc.status_code != 409:  # 409: the name is taken
                raise
            self._remove_leftover(api, service_name(name))
            return self._create_service(api, name, rid)

    def _create_service(self, api: docker.APIClient, name: str, rid: int) -> str:
        image = self._engine.image
        if self._image_by_id:
            # By ID, a node runs the image it holds and never tries to pull it.
            image = api.inspect_image(image)["Id"]
        limits = self._containment
        resources = Resources(cpu_limit=int(limits.cpus * 1e9), mem_limit=limits.memory_bytes())
        resources["Limits"]["Pids"] = limits.pids  # API 1.41; the SDK has no argument for it
        labels = self._labels(name, rid)
        spec = ContainerSpec(
            image,
            command=replica_command(name),
            hostname=name,
            env=replica_environment(name),
            labels=labels,
            read_only=limits.read_only,
            mounts=[Mount("/tmp", None, type="tmpfs", tmpfs_size=16 * 1024**2)]
            if limits.read_only
            else None,
            cap_drop=["ALL"],
            # Removed at once, like the docker runtime's forced removal: /rm has drained
            # the replica already, and a dead one has nothing to finish.
            stop_signal="SIGKILL",
            # No `no-new-privileges` here: services get it from API 1.44 on.
        )
        template = TaskTemplate(
            spec,
            resources=resources,
            restart_policy=RestartPolicy(condition="none"),
            placement=DockerPlacement(constraints=self._placement.constraints(_ready_nodes(api))),
            networks=[NetworkAttachmentConfig(self._network, aliases=[name])],
        )
        created = api.create_service(
            template,
            name=service_name(name),
            labels=labels,
            mode=ServiceMode("replicated", replicas=1),
            endpoint_spec=EndpointSpec(mode="dnsrr"),
        )
        return created["ID"]

    def _labels(self, name: str, rid: int) -> dict[str, str]:
        return {
            OWNER_LABEL: self._owner,
            ROLE_LABEL: REPLICA_ROLE,
            RID_LABEL: str(rid),
            NAME_LABEL: name,
        }

    def _remove_leftover(self, api: docker.APIClient, service: str) -> None:
        """Removes a service of ours holding the name that no replica owns (a leftover of
        an earlier run); refuses anyone else's."""
        info = api.inspect_service(service)
        if (info["Spec"].get("Labels") or {}).get(OWNER_LABEL) != self._owner:
            raise RuntimeFailure(
                f"service name '{service}' is taken by a service ringlb does not own"
            )
        log.warning("removing leftover service %s", service)
        _remove(api, info["ID"])

    def _ensure_network(self, api: docker.APIClient) -> None:
        """Creates the attachable overlay network when missing; labelled as ours."""
        with self._network_lock:  # starts run in parallel threads: create it once
            if self._network_ready:
                return
            existing = api.networks(names=[self._network])
            if not any(n["Name"] == self._network for n in existing):
                log.info("creating overlay network %s", self._network)
                api.create_network(
                    self._network,
                    driver="overlay",
                    attachable=True,
                    labels={OWNER_LABEL: self._owner},
                )
            self._network_ready = True

    async def _wait_running(self, name: str, service_id: str) -> dict[str, Any]:
        """Returns the service's task once it runs; raises RuntimeFailure when it ends
        first (Swarm's reason in the text) or does not run within the start timeout."""
        deadline = time.monotonic() + self._start_timeout
        state = "new"
        while time.monotonic() < deadline:
            tasks = await self._engine.call(f"starting '{name}'", _tasks, [service_id])
            task = latest_task(tasks)
            if task is not None:
                status = task["Status"]
                state = status["State"]
                if state == "running" and task_address(task, self._network):
                    return task
                if state not in STARTING_STATES and state != "running":
                    reason = status.get("Err") or status.get("Message") or state
                    raise RuntimeFailure(f"its Swarm task is {state}: {reason}")
            await asyncio.sleep(START_POLL)
        raise RuntimeFailure(f"its Swarm task is still {state} after {self._start_timeout:g} s")

    # -- stop ----------------------------------------------------------------------------

    async def stop(self, name: str, force: bool = False) -> None:
        service_id = self._live.pop(name, None)
        if service_id is None:
            return
        try:
            tasks = await self._engine.call(f"removing '{name}'", _tasks, [service_id])
            task = latest_task(tasks)
            if force and task is not None and task["Status"]["State"] == "running":
                # Dead to us, running to Swarm: its node has said nothing, it seems gone.
                log.warning("replica %s died unseen by Swarm: avoiding its node", name)
                self._placement.avoid(task["NodeID"])
            await self._engine.call(f"removing '{name}'", _remove, service_id)
            # Swarm stops the task after the service is gone: wait for it, so that a
            # removed replica is stopped when /rm answers, as the contract says. Not for
            # a dead one (`force`): its node may be down, and the wait would hold up its
            # replacement.
            if not force:
                await self._wait_gone(name, [t["ID"] for t in tasks])
        except RuntimeFailure as exc:
            # Never raise here: the replica is out of the ring already, and a failing stop
            # would stall the supervisor. A leftover is found by its labels on adoption.
            log.error("cannot remove service %s now (%s)", name, exc)
            return
        log.info("removed service %s", name)

    async def _wait_gone(self, name: str, task_ids: list[str]) -> None:
        """Returns once none of the tasks runs (Swarm deletes them once they stopped)."""
        deadline = time.monotonic() + GONE_WAIT
        while time.monotonic() < deadline:
            states = await self._engine.call(f"removing '{name}'", _task_states, task_ids)
            if all(state not in (*STARTING_STATES, "running") for state in states):
                return
            await asyncio.sleep(START_POLL)
        log.warning("task of removed service %s still runs after %g s", name, GONE_WAIT)

    async def _remove_quietly(self, service_id: str) -> None:
        try:
            await self._engine.call("removing a replica that failed to start", _remove, service_id)
        except RuntimeFailure as exc:
            log.error("cannot remove service %s (%s)", service_id[:12], exc)

    # -- adoption and deaths -------------------------------------------------------------

    async def adopt(self) -> list[RunningReplica]:
        found = await self._engine.call("listing replicas", self._list_ours)
        adopted = []
        for service, task in found:
            labels = service["Spec"].get("Labels") or {}
            name = labels.get(NAME_LABEL, service["Spec"]["Name"])
            ip = task_address(task, self._network) if task else None
            if not (task and task["Status"]["State"] == "running" and ip):
                log.warning("removing replica service %s: its task does not run", name)
                await self._remove_quietly(service["ID"])
                continue
            self._live[name] = service["ID"]
            rid = int(labels.get(RID_LABEL, "0"))
            adopted.append(RunningReplica(name, rid, ip, REPLICA_PORT))
        adopted.sort(key=lambda r: r.rid)
        return adopted

    async def listing(self) -> list[RunningReplica]:
        found = await self._engine.call("listing replicas", self._list_ours)
        running = []
        for service, task in found:
            labels = service["Spec"].get("Labels") or {}
            ip = task_address(task, self._network) if task else None
            if task and task["Status"]["State"] == "running" and ip:
                name = labels.get(NAME_LABEL, service["Spec"]["Name"])
                running.append(
                    RunningReplica(name, int(labels.get(RID_LABEL, "0")), ip, REPLICA_PORT)
                )
        running.sort(key=lambda r: r.rid)
        return running

    def lease_store(self) -> SwarmLeaseStore:
        return self._lease_store

    async def own_address(self) -> str | None:
        """The balancer's address on the overlay network, when it runs in a container of
        this engine (whose hostname is its container id, as Docker sets it)."""
        return await self._engine.call("finding this balancer's address", self._own_address)

    def _own_address(self, api: docker.APIClient) -> str | None:
        try:
            info = api.inspect_container(socket.gethostname())
        except NotFound:
            return None
        network = (info["NetworkSettings"].get("Networks") or {}).get(self._network) or {}
        return network.get("IPAddress") or None

    def _list_ours(self, api: docker.APIClient) -> list[tuple[dict[str, Any], dict | None]]:
        services = api.services(filters={"label": self._owner_labels()})
        if not services:
            return []
        tasks = _tasks(api, [s["ID"] for s in services])
        return [(s, latest_task([t for t in tasks if t["ServiceID"] == s["ID"]])) for s in services]

    def _owner_labels(self) -> list[str]:
        return [f"{OWNER_LABEL}={self._owner}", f"{ROLE_LABEL}={REPLICA_ROLE}"]

    async def deaths(self) -> AsyncIterator[str]:
        failing = False  # said once per outage, not once per poll
        while True:
            await asyncio.sleep(self._poll_interval)
            known = dict(self._live)
            if not known:
                continue
            try:
                alive = await self._engine.call(
                    "looking at replica tasks", self._alive, list(known.values())
                )
            except RuntimeFailure as exc:
                if not failing:
                    log.warning("cannot look at the replicas' tasks (%s); retrying", exc)
                    failing = True
                continue
            failing = False
            for name, service_id in known.items():
                # Checked again: the name may have been stopped, even reused, meanwhile.
                if service_id not in alive and self._live.get(name) == service_id:
                    log.warning("replica %s died (its Swarm task stopped)", name)
                    yield name

    def _alive(self, api: docker.APIClient, service_ids: list[str]) -> set[str]:
        """Returns which of the services have a running task on a node that is not down."""
        down = {n["ID"] for n in api.nodes() if n["Status"]["State"] == "down"}
        return {
            t["ServiceID"]
            for t in _tasks(api, service_ids)
            if t["Status"]["State"] == "running"
            and t.get("DesiredState") == "running"
            and t.get("NodeID") not in down
        }

    async def close(self) -> None:
        """Leaves the services running: a restarted balancer adopts them."""
        await self._engine.close()


def _tasks(api: docker.APIClient, service_ids: list[str]) -> list[dict[str, Any]]:
    try:
        return api.tasks(filters={"service": service_ids})
    except NotFound:  # a service removed meanwhile
        return []


def _ready_nodes(api: docker.APIClient) -> list[str]:
    """Returns the ids of the nodes that can take tasks now."""
    return [
        n["ID"]
        for n in api.nodes()
        if n["Status"]["State"] == "ready" and n["Spec"].get("Availability") == "active"
    ]


def _task_states(api: docker.APIClient, task_ids: list[str]) -> list[str]:
    """Returns the states of the tasks that still exist."""
    states = []
    for task_id in task_ids:
        try:
            states.append(api.inspect_task(task_id)["Status"]["State"])
        except NotFound:  # deleted: it has stopped
            continue
    return states


def _remove(api: docker.APIClient, service_id: str) -> None:
    """Removes a service; one that is gone or going already is fine."""
    try:
        api.remove_service(service_id)
    except APIError as exc:
        if not is_gone(exc):
            raise
