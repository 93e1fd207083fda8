"""`docker` runtime: each replica is a container on a Docker network, found by its name.

A replica `NAME` is the container `NAME`, with hostname and network alias `NAME`, env
`SERVER_ID=NAME`, running `ringlb replica --id NAME --port 5000`, published nowhere. Every
container carries labels (owner, role, ring id), so the state that must outlive the balancer
lives in Docker: a restarted balancer adopts the containers labelled with its owner instead
of starting new ones, and `make down` finds them all by label.

Engine calls go through `ringlb.runtimes.engine` (a worker thread, a deadline, one error
mapping). A container that stops on its own is left `keep_dead` seconds for whoever
stopped it to remove, then removed (a removal that finds it gone is fine). Deaths come
from Docker's event stream, read by a daemon thread that reconnects when the engine
restarts (and then looks for deaths it missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from docker.errors import APIError, NotFound

import docker
from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure
from ringlb.runtimes.engine import (
    ENGINE_ERRORS,
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
    short,
)

log = logging.getLogger("ringlb.runtime.docker")

# Events that mean a container stopped running. `kill` counts only for SIGKILL: another
# signal may be handled, and the `die` that follows a real exit is reported anyway.
DEATH_EVENTS = ("die", "kill", "stop", "oom")
RECONNECT_DELAY = 1.0

Report = Callable[[str, str], None]


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(
        self,
        engine: Engine,
        network: str,
        owner: str,
        containment: Containment,
        keep_dead: float,
    ) -> None:
        self._engine = engine  # engine.image is the only image this runtime ever starts
        self._containment = containment
        self._network = network
        self._owner = owner
        # Seconds a container that stopped on its own is left to whoever stopped it (a test
        # script's `docker stop X && docker rm X`) before this runtime removes it.
        self._keep_dead = keep_dead
        self._kept: dict[str, asyncio.TimerHandle] = {}  # container id -> its removal
        self._removals: set[asyncio.Task[None]] = set()
        self._network_ready = False
        self._network_lock = threading.Lock()
        # name -> container id of every replica we run. A name leaves this map *before* its
        # container is removed, so events about containers we remove on purpose are ignored.
        self._live: dict[str, str] = {}
        self._orphans: set[str] = set()  # ids of containers a failed stop left behind
        # Ids of containers the event stream said were killed or died: kept for their owner
        # even when the engine still shows them running (a `kill` event comes before the
        # container has stopped, and removing it then breaks the owner's `docker rm`).
        self._reported_dead: set[str] = set()
        self._events: Any = None  # the open event stream, closed to stop the reader thread

    # -- Runtime -------------------------------------------------------------------------

    async def start(self, name: str, rid: int) -> RunningReplica:
        if name in self._live:
            raise RuntimeFailure(f"container '{name}' is already running")
        container_id, ip = await self._engine.call(f"starting '{name}'", self._run, name, rid)
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
            with contextlib.suppress(*ENGINE_ERRORS):
                api.remove_container(container_id, force=True)
            raise

    def _create(self, api: docker.APIClient, name: str, rid: int) -> dict[str, Any]:
        return api.create_container(
            self._engine.image,
            command=replica_command(name),
            name=name,
            hostname=name,
            environment=replica_environment(name),
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
        _remove(api, info["Id"])

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
            outcome = await self._engine.call(
                f"removing '{name}'", self._remove_unless_dead, container_id
            )
        except RuntimeFailure as exc:
            # Never raise here: the replica is already out of the ring, and a failing stop
            # would stall the supervisor. The container is removed once the engine answers.
            self._orphans.add(container_id)
            log.error("cannot remove container %s now (%s); will retry", name, exc)
            return
        if outcome == "kept":
            self._remove_later(container_id)
            log.info(
                "container %s stopped on its own: removed in %g s unless its owner does",
                name,
                self._keep_dead,
            )
        else:
            log.info("removed container %s", name)

    def _remove_unless_dead(self, api: docker.APIClient, container_id: str) -> str:
        """Removes the container unless it stopped on its own and `keep_dead` is set;
        returns "kept" or "removed" (also when it was already gone)."""
        if self._keep_dead > 0:
            if container_id in self._reported_dead:
                return "kept"
            try:
                state = api.inspect_container(container_id)["State"]
            except NotFound:
                return "removed"
            if not state.get("Running"):
                return "kept"
        self._reported_dead.discard(container_id)
        _remove(api, container_id)
        return "removed"

    def _remove_later(self, container_id: str) -> None:
        loop = asyncio.get_running_loop()

        def expire() -> None:
            self._kept.pop(container_id, None)
            self._reported_dead.discard(container_id)
            task = loop.create_task(self._remove_kept(container_id))
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

        self._kept[container_id] = loop.call_later(self._keep_dead, expire)

    async def _remove_kept(self, container_id: str) -> None:
        try:
            await self._engine.call("removing a stopped replica", _remove, container_id)
        except RuntimeFailure as exc:
            self._orphans.add(container_id)
            log.error("cannot remove stopped container %s now (%s)", container_id[:12], exc)

    def _remove_orphans(self, api: docker.APIClient) -> None:
        """Removes containers a failed `stop` left behind."""
        for container_id in list(self._orphans):
            _remove(api, container_id)
            self._orphans.discard(container_id)
            log.info("removed left-over container %s", container_id[:12])

    async def adopt(self) -> list[RunningReplica]:
        found = await self._engine.call("listing replicas", self._list_ours)
        adopted = []
        for info in found:
            name = info["Name"].lstrip("/")
            labels = info["Config"].get("Labels") or {}
            running = info["State"].get("Running") and not info["State"].get("Restarting")
            endpoint = (info["NetworkSettings"].get("Networks") or {}).get(self._network)
            if not (running and endpoint and endpoint.get("IPAddress")):
                log.warning("removing stopped or detached replica container %s", name)
                await self._engine.call(f"removing '{name}'", _remove, info["Id"])
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
                    self._reported_dead.add(container_id)
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
                api = self._engine.client()
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
                self._engine.reset()
                if not failing:
                    log.warning("Docker event stream failed (%s); reconnecting", short(exc))
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
        """Leaves the containers running: a restarted balancer adopts them (and removes
        the stopped ones it still keeps)."""
        for handle in self._kept.values():
            handle.cancel()
        self._kept.clear()
        for task in list(self._removals):
            task.cancel()
        await asyncio.gather(*self._removals, return_exceptions=True)
        await self._engine.close()


def _remove(api: docker.APIClient, container_id: str) -> None:
    """Removes a container; one that is gone or being removed by someone else is fine."""
    try:
        api.remove_container(container_id, force=True)
    except APIError as exc:
        if not is_gone(exc):
            raise
