"""Swarm test helpers: the stack on a private engine, a request loop."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from dockertest import REPO, engine_problem

from lbtest import request, wait_until
from private_engine import Lan, Netns, PrivateEngine

# The replica image copied into the private engines (make build makes ringlb:latest).
IMAGE = os.environ.get("RINGLB_IMAGE", "ringlb:latest")
OWNER = "ringlb-swarm"  # deploy/stack.yml's RINGLB_DOCKER_OWNER
PORT = 5000  # published in the engine's namespace: no clash with this machine's ports
SECOND = 5001  # the second balancer of a one-node swarm (deploy/stack.yml's lb-second)
BALANCERS = {PORT: "lb", SECOND: "lb-second"}  # published port -> stack service
GENERATED = re.compile(r"^server_[0-9a-f]{6}$")


def swarm_problem() -> str | None:
    """Returns why no private swarm engine can be run here, or None."""
    if os.geteuid() != 0:
        return "a private swarm engine needs root"
    for tool in ("dockerd", "docker", "ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"a private swarm engine needs {tool}"
    problem = engine_problem()
    if problem:
        return problem
    import docker

    client = docker.from_env(timeout=30)
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        return f"image {IMAGE} not built (make build)"
    finally:
        client.close()
    return None


def skip_or_fail(problem: str) -> None:
    if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1":
        pytest.fail(f"RINGLB_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
    pytest.skip(problem)


def swarm_mode_problem(engine: PrivateEngine) -> str | None:
    """Returns why `engine` cannot be in a swarm, or None (after a swarm init and leave)."""
    assert engine.netns is not None
    url, address = engine.url, engine.netns.address
    init = subprocess.run(
        ["docker", "-H", url, "swarm", "init", "--advertise-addr", address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if init.returncode != 0:
        return f"swarm mode is impossible on a private engine: {init.stderr.strip()}"
    subprocess.run(
        ["docker", "-H", url, "swarm", "leave", "--force"], capture_output=True, timeout=60
    )
    return None


def private_engines(count: int) -> Iterator[list[PrivateEngine]]:
    """Starts `count` engines, each in a network namespace of its own, with the image: one
    reached from here over a veth pair, or several on one `Lan` (this namespace too)."""
    problem = swarm_problem()
    if problem:
        skip_or_fail(problem)
    base = 20 + os.getpid() % 200  # 10.214.<base>.0/24, or 10.215.<base>.0/24 for a Lan
    lan = Lan(base) if count > 1 else None
    engines = []
    try:
        if lan is not None:
            lan.create()
        try:
            for i in range(count):
                engine = PrivateEngine(netns=Netns(base if lan is None else i + 1, lan))
                engines.append(engine)  # before anything is made: the finally undoes it all
                engine.netns.create()
                engine.start()
                engine.copy_image(IMAGE)
            swarm_mode = swarm_mode_problem(engines[0])
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            swarm_mode = f"no private engine in a network namespace here ({exc})"
        if swarm_mode:
            skip_or_fail(swarm_mode)
        yield engines
    finally:
        for engine in engines:
            engine.destroy()
            engine.netns.destroy()
        if lan is not None:
            lan.destroy()


@dataclass
class SwarmStack:
    """The ringlb stack on the swarm whose manager is `engine`."""

    engine: PrivateEngine
    host: str
    env: dict[str, str]

    @classmethod
    def on(cls, engine: PrivateEngine) -> SwarmStack:
        netns = engine.netns
        assert netns is not None
        env = {
            **os.environ,
            "DOCKER_HOST": engine.url,
            "RINGLB_IMAGE": IMAGE,
            "RINGLB_SWARM_ADVERTISE_ADDR": netns.address,
            "RINGLB_SWARM_PROBE_HOST": netns.address,
            "RINGLB_HOST_PORT": str(PORT),
            # A setting deploy/stack.yml does not name: it must reach the balancer.
            "RINGLB_POLICY": "assignment",
        }
        return cls(engine, netns.address, env)

    def call(
        self,
        method: str,
        path: str,
        payload: object | None = None,
        timeout: float = 30,
        port: int = PORT,
    ):
        body = None if payload is None else json.dumps(payload)
        return request(port, method, path, body=body, host=self.host, timeout=timeout)

    def replicas(self, port: int = PORT) -> list[str]:
        return self.call("GET", "/rep", port=port).json()["message"]["replicas"]

    def balancer(self, port: int) -> dict:
        """Returns the `balancer` section of /status on `port`: name, role, leader..."""
        return self.call("GET", "/status", port=port, timeout=5).json()["message"]["balancer"]

    def settled(self) -> list[str]:
        """Waits until every balancer lists the same replicas (a change made on one shows
        on the others within a sync interval); returns them."""
        return wait_until(lambda: self._agreed(), 10, interval=0.05)

    def _agreed(self) -> list[str] | None:
        lists = [self.replicas(port) for port in BALANCERS]
        return lists[0] if all(names == lists[0] for names in lists) else None

    def roles(self) -> dict[int, str]:
        """Returns each balancer's role by port (every one answering)."""
        return {port: self.balancer(port)["role"] for port in BALANCERS}

    def homes(self, port: int, keys: list[int]) -> list[str]:
        """Returns which replica answered GET /home for each key (`X-Request-ID`), over one
        kept-alive connection."""
        conn = http.client.HTTPConnection(self.host, port, timeout=30)
        names = []
        try:
            for key in keys:
                conn.request("GET", "/home", headers={"X-Request-ID": f"{key:06d}"})
                reply = conn.getresponse()
                body = reply.read()
                assert reply.status == 200, f"port {port}, key {len(names)}: {body!r}"
                names.append(json.loads(body)["message"].removeprefix("Hello from Server: "))
        finally:
            conn.close()
        return names

    def docker(self, *args: str) -> str:
        done = subprocess.run(
            ["docker", "-H", self.engine.url, *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def swarm(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs `scripts/swarm.py <command>` against this engine."""
        done = subprocess.run(
            ["python3", str(REPO / "scripts" / "swarm.py"), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert done.returncode == 0, f"swarm.py {command}:\n{done.stdout}{done.stderr}"
        return done

    def services(self) -> dict[str, dict]:
        """Returns the replica services by contract name (the ringlb.name label)."""
        ids = self.docker(
            "service", "ls", "-q", "--filter", f"label=ringlb.owner={OWNER}",
            "--filter", "label=ringlb.role=replica",
        ).split()  # fmt: skip
        if not ids:
            return {}
        found = json.loads(self.docker("service", "inspect", *ids))
        return {s["Spec"]["Labels"]["ringlb.name"]: s for s in found}

    def container_of(self, name: str) -> str:
        """Returns the id of the running container of replica `name` ("" when none)."""
        return self.docker("ps", "-q", "--filter", f"label=ringlb.name={name}")

    def balancer_log(self, *words: str) -> str:
        """Returns the balancers' log lines that contain one of `words` (to print)."""
        lines = []
        for service in BALANCERS.values():
            done = subprocess.run(
                ["docker", "-H", self.engine.url, "service", "logs", "--raw", f"ringlb_{service}"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            lines += (done.stdout + done.stderr).splitlines()
        return "\n".join(line for line in lines if any(word in line for word in words))

    def balancer_container(self, port: int = PORT) -> str:
        """Returns the id of the running container of the balancer published on `port`."""
        label = f"label=com.docker.swarm.service.name=ringlb_{BALANCERS[port]}"
        return self.docker("ps", "-q", "--filter", label)


@dataclass
class RequestLoop:
    """GET /home in a loop on a thread while the block runs (bounded: 20,000 requests);
    records every failure. Waits for 50 requests on entry and 50 more on exit.

    With several `ports` (balancers), requests go to each in turn, and one whose connection
    is refused or reset is sent once more to the next balancer, as a client of several
    balancers behind DNS round robin does; it fails only when that fails too."""

    stack: SwarmStack
    ports: tuple[int, ...] = (PORT,)
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    retried: int = 0
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _once(self, port: int) -> None:
        reply = self.stack.call("GET", "/home", timeout=10, port=port)
        if reply.status != 200:
            self.failures.append(f"{port}: {reply.status} {reply.body[:200]!r}")

    def _run(self) -> None:
        ports = self.ports
        while not self._done.is_set() and self.sent < 20_000:
            port = ports[self.sent % len(ports)]
            try:
                self._once(port)
            except (ConnectionError, http.client.RemoteDisconnected) as exc:
                if len(ports) == 1:
                    self.failures.append(f"{port}: {exc!r}")
                else:
                    self.retried += 1
                    try:
                        self._once(ports[(self.sent + 1) % len(ports)])
                    except OSError as again:
                        self.failures.append(f"{port}: {exc!r}, then {again!r}")
            except OSError as exc:  # a timeout: not a refused or reset connection
                self.failures.append(f"{port}: {exc!r}")
            self.sent += 1

    def __enter__(self) -> RequestLoop:
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        wait_until(lambda: self.sent > 50, 30)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                mark = self.sent
                wait_until(lambda: self.sent > mark + 50, 30)
        finally:
            self._done.set()
            assert self._thread is not None
            self._thread.join()
