"""A Docker daemon of the test's own, so that restarting it disturbs nobody else's containers.

It is a second `dockerd` with its own data root, exec root (and so its own containerd), API
socket and address pool, without iptables rules or a default bridge; the replica image is
copied into it from the shared engine. Started and stopped by pid, like any child.

Given a `Netns`, it runs in a network namespace of the test's own (reached from here over a
veth pair): what it does to networks (a swarm's overlay and gateway bridge, ports it
publishes) stays there, and several can be joined into one swarm.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ADDRESS_POOL = "base=10.213.0.0/16,size=24"  # away from the shared engine's 172.x networks


def ip(*commands: str) -> None:
    for command in commands:
        subprocess.run(command.split(), check=True, capture_output=True, timeout=30)


class Lan:
    """One Ethernet segment for several namespaces: a bridge in a namespace of its own,
    10.215.<index>.0/24, this (the host's) namespace on it as .254."""

    def __init__(self, index: int) -> None:
        self.name = f"rlb-{os.getpid()}-lan{index}"
        self.prefix = f"10.215.{index}"
        self.host_if = f"rlbl{os.getpid() % 10000}h"
        self.host_address = f"{self.prefix}.254"

    def create(self) -> None:
        ip(
            f"ip netns add {self.name}",
            f"ip -n {self.name} link add br0 type bridge",
            f"ip -n {self.name} link set br0 up",
        )
        self.plug(None, self.host_if, self.host_address)

    def plug(self, netns: str | None, interface: str, address: str) -> None:
        """Puts `interface` (in `netns`, or here) on the bridge, with `address`."""
        peer = f"{interface}p"
        ip(
            f"ip link add {interface} type veth peer name {peer}",
            f"ip link set {peer} netns {self.name}",
            f"ip -n {self.name} link set {peer} master br0 up",
        )
        where = f"-n {netns} " if netns else ""
        if netns:
            ip(f"ip link set {interface} netns {netns}")
        ip(f"ip {where}addr add {address}/24 dev {interface}", f"ip {where}link set {interface} up")

    def cut(self, interface: str) -> None:
        """Cuts `interface` off the segment (its bridge port down): no packet either way."""
        ip(f"ip -n {self.name} link set {interface}p down")

    def destroy(self) -> None:
        for command in (f"ip link del {self.host_if}", f"ip netns del {self.name}"):
            subprocess.run(command.split(), capture_output=True, timeout=30, check=False)


class Netns:
    """A network namespace of the test's own, reached from here over a veth pair (host side
    10.214.<index>.1, `address` 10.214.<index>.2), or on a `Lan` (`address` .<index>)."""

    def __init__(self, index: int, lan: Lan | None = None) -> None:
        self.name = f"rlb-{os.getpid()}-{index}"
        self.lan = lan
        self.host_if = f"rlbh{os.getpid() % 10000}x{index}"[:14]
        self.inner_if = f"rlbn{os.getpid() % 10000}x{index}"[:14]
        self.address = f"{lan.prefix}.{index}" if lan else f"10.214.{index}.2"

    def create(self) -> None:
        ip(f"ip netns add {self.name}", f"ip -n {self.name} link set lo up")
        if self.lan is not None:
            self.lan.plug(self.name, self.inner_if, self.address)
            return
        ip(
            f"ip link add {self.host_if} type veth peer name {self.inner_if}",
            f"ip link set {self.inner_if} netns {self.name}",
            f"ip addr add {self.address.removesuffix('.2')}.1/24 dev {self.host_if}",
            f"ip link set {self.host_if} up",
            f"ip -n {self.name} addr add {self.address}/24 dev {self.inner_if}",
            f"ip -n {self.name} link set {self.inner_if} up",
        )

    def prefix(self) -> list[str]:
        """Returns the command prefix that runs a program in the namespace."""
        # nsenter, not `ip netns exec`: that one remounts /sys in a new mount namespace,
        # hiding the cgroup mounts dockerd needs.
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def destroy(self) -> None:
        """Deletes the namespace and the host end of the pair (never fails)."""
        for command in (f"ip link del {self.host_if}", f"ip netns del {self.name}"):
            subprocess.run(command.split(), capture_output=True, timeout=30, check=False)


class PrivateEngine:
    def __init__(self, live_restore: bool = False, netns: Netns | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rlb-engine-"))
        self.url = f"unix://{self.root / 'docker.sock'}"
        self.live_restore = live_restore
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "dockerd.log"

    def command(self) -> list[str]:
        root = self.root
        return [
            *(self.netns.prefix() if self.netns else []),
            "dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "docker.pid"), "-H", self.url, "--bridge", "none",
            "--iptables=false", "--ip-masq=false", "--storage-driver", "overlay2",
            "--default-address-pool", ADDRESS_POOL,
            *(["--live-restore"] if self.live_restore else []),
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Starts the daemon and returns once its API answers."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"private dockerd did not start:\n{self.log.read_text()[-2000:]}"
                )
            time.sleep(0.2)

    def answers(self) -> bool:
        done = subprocess.run(
            ["docker", "-H", self.url, "info"], capture_output=True, timeout=10, check=False
        )
        return done.returncode == 0

    def stop(self, timeout: float = 60.0) -> None:
        """Stops the daemon (SIGTERM, then SIGKILL) and waits for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def copy_image(self, image: str) -> None:
        """Copies `image` from the shared engine (DOCKER_HOST or the default socket)."""
        subprocess.run(
            f"docker save {image} | docker -H {self.url} load -q",
            shell=True,
            check=True,
            capture_output=True,
            timeout=300,
        )

    def destroy(self) -> None:
        """Removes every container of this engine, stops it and deletes its files."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                ids = subprocess.run(
                    ["docker", "-H", self.url, "ps", "-aq"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout.split()
                if ids:
                    subprocess.run(
                        ["docker", "-H", self.url, "rm", "-f", *ids],
                        capture_output=True,
                        timeout=60,
                    )
        self.stop()
        # dockerd may leave its data root bind-mounted on itself: unmount before deleting.
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for point in reversed([m.split()[1] for m in mounts if str(self.root) in m.split()[1]]):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
