"""`docker` runtime: each replica is a container on a Docker network, found by its name.

A replica `NAME` is the container `NAME`, with hostname and network alias `NAME`, env
`SERVER_ID=NAME`, running `ringlb replica --id NAME --port 5000`, published nowhere. Every
container carries labels (owner, role, ring id), so the state that must outlive the balancer
lives in Docker: a restarted balancer adopts the containers labelled with its owner instead
of starting new ones, and `make down` finds them all by label.

The Docker SDK is blocking: every call runs in a worker thread (`asyncio.to_thread`) with a
socket timeout, so an unreachable or hung daemon becomes a RuntimeFailure, never a hang.
Deaths come from Docker's event stream, read by a daemon thread that reconnects when the
engine restarts (and then looks for deaths it missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import RequestException

import docker
from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure

log = logging.getLogger("ringlb.runtime.docker")

REPLICA_PORT = 5000
OWNER_LABEL = "ringlb.owner"
ROLE_LABEL = "ringlb.role"
RID_LABEL = "ringlb.rid"
REPLICA_ROLE = "replica"
# Events that mean a container stopped running. `kill` counts only for SIGKILL: another
# signal may be handled, and the `die` that follows a real exit is reported anyway.
DEATH_EVENTS = ("die", "kill", "stop", "oom")
RECONNECT_DELAY = 1.0

Report = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Containment:
    """What a replica container may use and do. The balancer holds the Docker socket, so
    what it starts must be boxed in: bounded memory, CPU and processes, no capabilities,
    no privilege gain, and (when the replica allows it) a read-only root filesystem."""

    memory: str = "256m"
    cpus: float = 1.0
    pids: int = 128
    read_only: bool = True

    def host_config(self, api: docker.APIClient, network: str) -> dict[str, Any]:
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


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(
        self,
        image: str,
        network: str,
        owner: str,
        api_timeout: float = 10.0,
        base_url: str | None = None,
        containment: Containment | None = None,
    ) -> None:
        self._image = image  # the only image this runtime ever starts
        self._containment = containment or Containment()
        self._network = network
        self._owner = owner
        self._api_timeout = api_timeout
        self._base_url = base_url
        self._api: docker.APIClient | None = None
        self._network_ready = False
        self._network_lock = threading.Lock()
        # name -> container id of every replica we run. A name leaves this map *before* its
        # container is removed, so events about containers we remove on purpose are ignored.
        self._live: dict[str, str] = {}
        self._orphans: set[str] = set()  # ids of containers a failed stop left behind
        self._events: Any = None  # the open event stream, closed to stop the reader thread

    # -- the Docker API, off the event loop ----------------------------------------------

    def _client(self) -> docker.APIClient:
        """Returns a connected API client (created on first use; raises DockerException)."""
        if self._api is None:
            kwargs = docker.utils.kwargs_from_env()
            if self._base_url:
                kwargs["base_url"] = self._base_url
            # version="auto" asks the engine for its API version: the first call that can fail.
            self._api = docker.APIClient(version="auto", timeout=self._api_timeout, **kwargs)
        return self._api

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs `fn(client, *args)` in a thread; maps engine trouble to RuntimeFailure."""
        try:
            return await asyncio.to_thread(lambda: fn(self._client(), *args))
        except RuntimeFailure:
            raise
        except ImageNotFound:
            raise RuntimeFailure(
                f"Docker image '{self._image}' not found (build it with `make build`)"
            ) from None
        except (DockerException, RequestException, OSError) as exc:
            self._api = None  # reconnect next time (the engine may have restarted)
            raise RuntimeFailure(f"Docker engine error while {what}: {_short(exc)}") from None

    # -- Runtime -------------------------------------------------------------------------

    async def start(self, name: str, rid: int) -> RunningReplica:
        if name in self._live:
            raise RuntimeFailure(f"container '{name}' is already running")
        container_id, ip = await self._call(f"starting '{name}'", self._run, name, rid)
        self._live[name] = container_id
        log.info(
            "started container %s (%s) at %s on %s", name, container_id[:12], ip, self._network
        )
        return RunningReplica(name=name, rid=rid, host=ip, port=REPLICA_PORT)

    def _run(self, api: docker.APIClient, name: str, rid: int) -> tuple[str, str]:
        self._ensure_network(api)
        self._remove_orphans(api)
        try:
            created = self._create(api, name, rid)
        except APIError as exc:
            if exc.status_code != 409:  # 409: the name is taken
                raise
            self._remove_leftover(api, name)
            created = self._create(api, name, rid)
        container_id = created["Id"]
        try:
            api.start(container_id)
            return container_id, self._address(api.inspect_container(container_id))
        except BaseException:
            with contextlib.suppress(DockerException, RequestException, OSError):
                api.remove_container(container_id, force=True)
            raise

    def _create(self, api: docker.APIClient, name: str, rid: int) -> dict[str, Any]:
        return api.create_container(
            self._image,
            command=["ringlb", "replica", "--id", name, "--port", str(REPLICA_PORT)],
            name=name,
            hostname=name,
            # No bytecode cache: the root filesystem may be read-only.
            environment={"SERVER_ID": name, "PYTHONDONTWRITEBYTECODE": "1"},
            labels={OWNER_LABEL: self._owner, ROLE_LABEL: REPLICA_ROLE, RID_LABEL: str(rid)},
            host_config=self._containment.host_config(api, self._network),
            networking_config=api.create_networking_config(
                {self._network: api.create_endpoint_config(aliases=[name])}
            ),
        )

    def _remove_leftover(self, api: docker.APIClient, name: str) -> None:
        """Removes a container of ours holding `name` that no replica owns (a leftover of an
        earlier run); refuses anyone else's."""
        info = api.inspect_container(name)
        labels = info["Config"].get("Labels") or {}
        if labels.get(OWNER_LABEL) != self._owner:
            raise RuntimeFailure(
                f"container name '{name}' is taken by a container ringlb does not own"
            )
        log.warning("removing leftover container %s", name)
        api.remove_container(info["Id"], force=True)

    def _ensure_network(self, api: docker.APIClient) -> None:
        """Creates the network when missing (compose normally has); labelled as ours."""
        # Under a lock: replicas start in parallel threads, and Docker happily creates
        # several networks with the same name, which then makes the name ambiguous.
        with self._network_lock:
            if self._network_ready:
                return
            # The name filter matches substrings ("net1" finds "net10"): compare exactly.
            existing = api.networks(names=[self._network])
            if not any(n["Name"] == self._network for n in existing):
                log.info("creating Docker network %s", self._network)
                api.create_network(
                    self._network, driver="bridge", labels={OWNER_LABEL: self._owner}
                )
            self._network_ready = True

    def _address(self, info: dict[str, Any]) -> str:
        """Returns the container's IP on our network: reachable from the host and from peers."""
        endpoint = (info["NetworkSettings"].get("Networks") or {}).get(self._network) or {}
        ip = endpoint.get("IPAddress")
        if not ip:
            raise RuntimeFailure(
                f"container '{info['Name'].lstrip('/')}' has no address on {self._network}"
            )
        return ip

    async def stop(self, name: str, force: bool = False) -> None:
        # Always a forced removal: /rm has already drained the replica, and a dead one has
        # nothing to wait for. Only containers this runtime started or adopted are touched.
        container_id = self._live.pop(name, None)
        if container_id is None:
            return
        try:
            await self._call(f"removing '{name}'", _remove, container_id)
        except RuntimeFailure as exc:
            # Never raise here: the replica is already out of the ring, and a failing stop
            # would stall the supervisor. The container is removed once the engine answers.
            self._orphans.add(container_id)
            log.error("cannot remove container %s now (%s); will retry", name, exc)
            return
        log.info("removed container %s", name)

    def _remove_orphans(self, api: docker.APIClient) -> None:
        """Removes containers a failed `stop` left behind."""
        for container_id in list(self._orphans):
            _remove(api, container_id)
            self._orphans.discard(container_id)
            log.info("removed left-over container %s", container_id[:12])

    async def adopt(self) -> list[RunningReplica]:
        found = await self._call("listing replicas", self._list_ours)
        adopted = []
        for info in found:
            name = info["Name"].lstrip("/")
            labels = info["Config"].get("Labels") or {}
            running = info["State"].get("Running") and not info["State"].get("Restarting")
            endpoint = (info["NetworkSettings"].get("Networks") or {}).get(self._network)
            if not (running and endpoint and endpoint.get("IPAddress")):
                log.warning("removing stopped or detached replica container %s", name)
                await self._call(f"removing '{name}'", _remove, info["Id"])
                continue
            self._live[name] = info["Id"]
            rid = int(labels.get(RID_LABEL, "0"))
            adopted.append(RunningReplica(name, rid, endpoint["IPAddress"], REPLICA_PORT))
        adopted.sort(key=lambda r: r.rid)
        return adopted

    def _list_ours(self, api: docker.APIClient) -> list[dict[str, Any]]:
        containers = api.containers(all=True, filters={"label": self._labels()})
        return [api.inspect_container(c["Id"]) for c in containers]

    def _labels(self) -> list[str]:
        return [f"{OWNER_LABEL}={self._owner}", f"{ROLE_LABEL}={REPLICA_ROLE}"]

    async def deaths(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        stopped = threading.Event()

        def report(name: str, container_id: str) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(queue.put_nowait, (name, container_id))

        # A daemon thread, not to_thread: it blocks in a read that only closing the stream
        # ends, and must never hold up the loop's shutdown.
        reader = threading.Thread(
            target=self._read_events, args=(report, stopped), name="docker-events", daemon=True
        )
        reader.start()
        try:
            while True:
                name, container_id = await queue.get()
                # Checked again on the loop: the name may have been stopped, even reused,
                # between the reader's check and now.
                if self._live.get(name) == container_id:
                    log.warning("container %s died (Docker event)", name)
                    yield name
        finally:
            stopped.set()
            stream, self._events = self._events, None
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def _read_events(self, report: Report, stopped: threading.Event) -> None:
        """Reads the event stream until `stopped`; reconnects when the engine goes away."""
        filters = {"type": "container", "event": list(DEATH_EVENTS), "label": self._labels()}
        failing = False  # said once per outage, not once per retry
        while not stopped.is_set():
            try:
                api = self._client()
                self._events = api.events(decode=True, filters=filters)
                self._report_missed(api, report)
                self._remove_orphans(api)
                if failing:
                    log.warning("Docker event stream reconnected")
                    failing = False
                for event in self._events:
                    self._on_event(event, report)
                if not stopped.is_set():
                    log.warning("Docker event stream ended; reconnecting")
            except Exception as exc:  # any failure of the stream: reconnect, never die
                if stopped.is_set():
                    return
                self._api = None
                if not failing:
                    log.warning("Docker event stream failed (%s); reconnecting", _short(exc))
                    failing = True
            stopped.wait(RECONNECT_DELAY)

    def _on_event(self, event: dict[str, Any], report: Report) -> None:
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        name, container_id = attributes.get("name", ""), actor.get("ID", "")
        action = event.get("Action") or event.get("status")
        if action == "kill" and attributes.get("signal") not in ("9", "SIGKILL", "KILL"):
            return
        if self._live.get(name) == container_id:
            report(name, container_id)

    def _report_missed(self, api: docker.APIClient, report: Report) -> None:
        """Reports replicas that stopped while no stream was open (e.g. engine restart)."""
        # Only replicas known before the listing: one started meanwhile is not missing.
        known = list(self._live.items())
        running = {c["Id"] for c in api.containers(filters={"label": self._labels()})}
        for name, container_id in known:
            if container_id not in running:
                report(name, container_id)

    async def close(self) -> None:
        """Leaves the containers running: a restarted balancer adopts them."""
        api, self._api = self._api, None
        if api is not None:
            await asyncio.to_thread(api.close)


def _remove(api: docker.APIClient, container_id: str) -> None:
    with contextlib.suppress(NotFound):
        api.remove_container(container_id, force=True)


def _short(exc: BaseException) -> str:
    """Returns the first line of an SDK error, which can be very long."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
