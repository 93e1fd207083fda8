"""The systems under test: ringlb with its three replicas, and HAProxy and nginx configured
in front of those same replica processes, each on its own loopback port.

Every target exposes `port` and `pids()`: the processes whose CPU and memory are the
balancer's cost (never the replicas').
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import procstat

from ringlb.runtimes.process import find_replica_processes

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_status(port: int, path: str, timeout: float = 2.0, tls: bool = False) -> int | None:
    """Returns the status of GET `path` on a new connection (over TLS, unverified, with
    `tls`), or None when nothing answers."""
    if tls:
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_for(
    port: int, path: str, proc: subprocess.Popen, what: str, timeout: float = 30, tls: bool = False
) -> None:
    deadline = time.monotonic() + timeout
    while get_status(port, path, tls=tls) != 200:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {_log_tail(proc)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer GET {path} on :{port} in {timeout} s")
        time.sleep(0.1)


def _log_tail(proc: subprocess.Popen) -> str:
    log = getattr(proc, "log_path", None)
    return log.read_text()[-2000:] if log else ""


@dataclass(frozen=True)
class ReplicaEndpoint:
    name: str
    pid: int
    port: int


def replicas_of(balancer_pid: int) -> list[ReplicaEndpoint]:
    """Returns the replica processes a `ringlb serve` started (env RINGLB_PARENT_PID)."""
    return [
        ReplicaEndpoint(p.name, p.pid, p.port)
        for p in find_replica_processes(balancer_pid)
        if p.port is not None
    ]


class Target:
    name = ""
    port = 0
    held = True  # takes part in the connection-scale run (when it has processes to watch)

    def pids(self) -> list[int]:
        return []

    def stop(self) -> None:
        pass


class _Process(Target):
    """A target that is one foreground process we started (and stop with SIGTERM)."""

    proc: subprocess.Popen | None = None

    def _spawn(self, args: list[str], log_path: Path, **kw) -> subprocess.Popen:
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw
            )
        self.proc.log_path = log_path
        return self.proc

    def _ready(self, path: str, what: str, tls: bool = False) -> None:
        """Waits until GET `path` answers 200; stops the process if it never does."""
        try:
            wait_for(self.port, path, self.proc, what, tls=tls)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Ringlb(_Process):
    """`ringlb serve` with its own three replica processes (the ones every target shares)."""

    name = "ringlb"

    def __init__(
        self, workdir: Path, policy: str = "round_robin", extra_args: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.policy = policy
        args = [sys.executable, "-m", "ringlb", "serve", "--port", str(self.port)]
        args += ["--replicas", "3", "--log-level", "WARNING", "--policy", policy, *extra_args]
        self._spawn(args, workdir / "ringlb.log", cwd=ROOT)
        self._ready("/rep", "ringlb serve")
        self.replicas = replicas_of(self.proc.pid)
        if len(self.replicas) != 3:
            raise RuntimeError(f"expected 3 replica processes, found {self.replicas}")

    def pids(self) -> list[int]:
        return [self.proc.pid]


class PythonFloor(_Process):
    """bench/floor_proxy.py in front of the same replicas: a Python proxy with no features,
    the floor under ringlb's own cost."""

    name = "py-floor"

    held = False  # no limits to show: skipped by the connection-scale run

    def __init__(self, workdir: Path, replicas: list[ReplicaEndpoint]) -> None:
        self.port = free_port()
        args = [sys.executable, str(ROOT / "bench" / "floor_proxy.py"), str(self.port)]
        self._spawn(args + [str(r.port) for r in replicas], workdir / "floor.log")
        self._ready("/home", "floor proxy")

    def pids(self) -> list[int]:
        return [self.proc.pid]


class Direct(Target):
    """One replica, no balancer in front: the ceiling of a single replica process."""

    name = "direct"

    def __init__(self, replica: ReplicaEndpoint) -> None:
        self.port = replica.port


# ringlb's default upstream_pool_size: HAProxy gets the same per-replica connection cap.
UPSTREAM_CAP = 64

HAPROXY_CONFIG = """\
# No `log` line: HAProxy logs nothing. One thread, like ringlb's single event loop.
global
    nbthread 1
    # HAProxy reserves two descriptors per connection and refuses to start when the
    # open-file limit (20000 on the bench machine) is below that. With `http-reuse always`
    # server-side connections are shared, so 10,000 clients need about 10,100: warn only.
    no strict-limits
    maxconn 10100
{global_extra}
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    option http-keep-alive
    http-reuse always
{defaults_extra}
frontend bench
    bind 127.0.0.1:{port} backlog 4096{bind_extra}
    # The fields ringlb adds to every request (Host is kept as sent): the replicas read
    # the same request behind every balancer.
    option forwardfor
    http-request set-header X-Forwarded-Proto {proto}
    http-request add-header Via "1.1 haproxy"
    default_backend replicas

backend replicas
    # Round robin, like ringlb's `round_robin` policy and nginx's default.
{cap_comment}
    balance roundrobin
    timeout queue 30s
    option httpchk GET /heartbeat
{servers}
"""


class Haproxy(_Process):
    """HAProxy with HAPROXY_CONFIG; `global_extra` and `defaults_extra` are lines added to
    those sections (the attack harness adds a header timeout and a stats socket), and
    `server_maxconn` caps the connections to each replica (None: HAProxy's default, no cap).
    With `tls_pem` (certificate and key in one PEM file) it terminates TLS instead, like
    ringlb's HTTPS listener: TLS 1.2 and up, ALPN http/1.1.
    """

    name = "haproxy"

    def __init__(
        self,
        workdir: Path,
        replicas: list[ReplicaEndpoint],
        global_extra: Sequence[str] = (),
        defaults_extra: Sequence[str] = (),
        server_maxconn: int | None = UPSTREAM_CAP,
        tls_pem: Path | None = None,
    ) -> None:
        self.port = free_port()
        if tls_pem is not None:
            self.name = "haproxy-https"
            bind_extra = f" ssl crt {tls_pem} alpn http/1.1 ssl-min-ver TLSv1.2"
        else:
            bind_extra = ""
        cap = f" maxconn {server_maxconn}" if server_maxconn else ""
        servers = "\n".join(
            f"    server {r.name} 127.0.0.1:{r.port} check inter 1s{cap}" for r in replicas
        )
        if server_maxconn:
            cap_comment = (
                f"    # At most {server_maxconn} connections per replica (ringlb's "
                "upstream_pool_size), extra requests queue."
            )
        else:
            cap_comment = "    # No cap on the connections per replica (HAProxy's default)."
        config = workdir / f"{self.name}.cfg"
        text = HAPROXY_CONFIG.format(
            port=self.port,
            bind_extra=bind_extra,
            proto="http" if tls_pem is None else "https",
            servers=servers,
            cap_comment=cap_comment,
            global_extra="".join(f"    {line}\n" for line in global_extra),
            defaults_extra="".join(f"    {line}\n" for line in defaults_extra),
        )
        config.write_text(text)
        self._spawn([_binary("haproxy"), "-db", "-f", str(config)], workdir / f"{self.name}.log")
        self._ready("/home", self.name, tls=tls_pem is not None)

    def pids(self) -> list[int]:
        return [self.proc.pid]


NGINX_CONFIG = """\
# One worker process, like ringlb's single event loop; the master only supervises it.
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;

events {{
    worker_connections 19000;
}}

http {{
    access_log off;
    # nginx closes a keep-alive connection after 1000 requests by default; HAProxy and
    # ringlb do not, so lift the limit on both sides for a like-for-like comparison.
    keepalive_requests 10000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream replicas {{
{servers}
        keepalive 64;
        keepalive_requests 10000000;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The fields ringlb adds to every request, and the client's Host kept: the
            # replicas read the same request behind every balancer.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Via "1.1 nginx";
        }}
    }}
}}
"""


class Nginx(_Process):
    name = "nginx"

    def __init__(self, workdir: Path, replicas: list[ReplicaEndpoint]) -> None:
        self.port = free_port()
        servers = "\n".join(f"        server 127.0.0.1:{r.port};" for r in replicas)
        config = workdir / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(port=self.port, servers=servers, dir=workdir))
        args = [_binary("nginx"), "-p", str(workdir), "-c", str(config), "-e", "stderr"]
        self._spawn(args, workdir / "nginx.log")
        self._ready("/home", "nginx")

    def pids(self) -> list[int]:
        return [self.proc.pid, *procstat.children(self.proc.pid)]


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise RuntimeError(f"{name} is not installed; run bench/install.sh")
    return path


def version(name: str) -> str:
    """Returns the first line a reference program prints about its version."""
    flag = {"haproxy": "-v", "nginx": "-v", "wrk": "-v"}[name]
    out = subprocess.run([_binary(name), flag], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine() -> dict[str, str]:
    """Returns what a reader needs to compare figures across machines."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "memory_gib": f"{mem_kib / 1024 / 1024:.1f}",
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
