"""The HTTPS listener with real clients (curl, Python's ssl, websockets) and certificates
made by the test: verification, SNI, ALPN, reload on SIGHUP, redirect, bad files.

The replicas are real processes running tests/echo_replica.py, so a test can read what
reached them (X-Forwarded-Proto); `/ws` tests use ringlb's own replica.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from certs import TestCA, common_name
from lbtest import BalancerProcess, free_port, wait_until

ECHO = Path(__file__).resolve().parent.parent / "echo_replica.py"
BOUND = 20.0  # seconds: a guard against a hang, not a timing assertion


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    ca = TestCA(tmp_path_factory.mktemp("tls"))
    ca.issue("lb", "localhost", "127.0.0.1")
    ca.issue("other", "other.test", "*.other.test")
    return ca


@pytest.fixture(scope="module")
def lb(ca: TestCA) -> Iterator[BalancerProcess]:
    command = f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}"
    balancer = BalancerProcess(
        "--replica-command",
        command,
        "--tls-port",
        str(free_port()),
        "--tls-cert",
        f"{ca.dir / 'lb.crt'},{ca.dir / 'other.crt'}",
        "--tls-key",
        f"{ca.dir / 'lb.key'},{ca.dir / 'other.key'}",
        "--tls-redirect",
        "true",
    )
    balancer.tls_port = int(balancer.args[balancer.args.index("--tls-port") + 1])  # type: ignore[attr-defined]
    try:
        yield balancer.start()
    finally:
        balancer.cleanup()


def trusting(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca.path)


def https(lb: BalancerProcess, ca: TestCA, name: str = "localhost") -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        name,
        lb.tls_port,
        context=trusting(ca),
        timeout=BOUND,  # type: ignore[attr-defined]
    )


def open_tls(
    lb: BalancerProcess, context: ssl.SSLContext, name: str
) -> http.client.HTTPSConnection:
    """Returns a connection to the HTTPS listener (by address) asking for `name` by SNI."""
    port = lb.tls_port  # type: ignore[attr-defined]
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=BOUND)
    raw = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    try:
        conn.sock = context.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise
    return conn


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def peer_name(conn: http.client.HTTPSConnection) -> str:
    assert conn.sock is not None
    return common_name(conn.sock.getpeercert(True))  # type: ignore[attr-defined]


def test_curl_verifies_the_listener_and_negotiates_http_1_1(
    lb: BalancerProcess, ca: TestCA
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    port = lb.tls_port  # type: ignore[attr-defined]
    done = subprocess.run(
        ["curl", "-sS", "-v", "--cacert", str(ca.path), f"https://localhost:{port}/home"],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"].startswith("Hello from Server:")
    assert (
        "ALPN: server accepted http/1.1" in done.stderr
        or "ALPN, server accepted to use http/1.1" in done.stderr
    ), done.stderr


def test_the_contract_holds_over_https_with_x_forwarded_proto(
    lb: BalancerProcess, ca: TestCA
) -> None:
    conn = https(lb, ca)
    try:
        status, _, body = get(conn, "/rep")
        assert status == 200 and json.loads(body)["message"]["N"] == 3
        status, _, body = get(conn, "/echo")  # the same connection: keep-alive
        fields = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert status == 200 and fields["x-forwarded-proto"] == "https"
        status, _, body = get(conn, "/nowhere")
        assert status == 400 and b"'/nowhere' endpoint does not exist" in body
    finally:
        conn.close()


def test_sni_chooses_the_certificate_for_the_name_asked(lb: BalancerProcess, ca: TestCA) -> None:
    for asked, served in (
        ("localhost", "localhost"),
        ("other.test", "other.test"),
        ("api.other.test", "other.test"),  # the wildcard
    ):
        conn = open_tls(lb, trusting(ca), asked)
        try:
            assert peer_name(conn) == served
            assert conn.sock.selected_alpn_protocol() in (None, "http/1.1")  # type: ignore[union-attr]
            assert get(conn, "/home")[0] == 200
        finally:
            conn.close()


def test_a_verifying_client_refuses_a_wrong_certificate(
    lb: BalancerProcess, ca: TestCA, tmp_path: Path
) -> None:
    stranger = TestCA(tmp_path, "some other CA")  # not the listener's issuer
    with pytest.raises(ssl.SSLCertVerificationError):
        open_tls(lb, trusting(stranger), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):  # right CA, wrong name
        open_tls(lb, trusting(ca), "nobody.example")


def test_plain_requests_are_redirected_to_https_and_curl_follows(
    lb: BalancerProcess, ca: TestCA
) -> None:
    port = lb.tls_port  # type: ignore[attr-defined]
    reply = lb.get("/home?x=1", headers={"Host": f"localhost:{lb.port}"})
    assert reply.status == 308 and reply.headers["location"] == f"https://localhost:{port}/home?x=1"
    assert lb.get("/rep").status == 200  # the admin API stays on the plain listener
    if shutil.which("curl") is not None:
        done = subprocess.run(
            ["curl", "-sSL", "--cacert", str(ca.path), f"http://localhost:{lb.port}/home"],
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
        assert done.returncode == 0 and "Hello from Server" in done.stdout, done.stderr


def test_sighup_reloads_certificates_without_dropping_open_connections(
    lb: BalancerProcess, ca: TestCA
) -> None:
    before = https(lb, ca)
    try:
        assert get(before, "/home")[0] == 200
        assert peer_name(before) == "localhost"
        stamps = {p: p.stat() for p in (ca.dir / "lb.crt", ca.dir / "lb.key")}
        ca.issue("lb", "localhost", "127.0.0.1", serial_note="reloaded")  # same files, anew
        for path, stat in stamps.items():  # the file watch sees no change: SIGHUP alone
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        lb.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]

        def new_name() -> bool:
            conn = https(lb, ca)
            try:
                conn.connect()
                return peer_name(conn) == "reloaded"
            finally:
                conn.close()

        wait_until(new_name, BOUND)
        for _ in range(3):  # the connection opened before goes on, with its session
            assert get(before, "/home")[0] == 200
        assert peer_name(before) == "localhost"
    finally:
        before.close()
    assert "TLS certificates reloaded" in lb.log()


def test_bad_certificate_paths_stop_start_up_naming_option_and_file(
    ca: TestCA, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    mismatched = (str(ca.dir / "lb.crt"), str(ca.dir / "other.key"))
    for args, option, file in (
        (["--tls-cert", str(missing)], "tls_cert", str(missing)),
        (["--tls-cert", mismatched[0], "--tls-key", str(missing)], "tls_key", str(missing)),
        (["--tls-cert", mismatched[0], "--tls-key", mismatched[1]], "tls_key", mismatched[1]),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "ringlb", "serve", "--port", "0", "--tls-port", "0", *args],
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
        assert done.returncode == 2, done.stderr
        assert option in done.stderr and file in done.stderr, done.stderr


async def test_websocket_over_tls_echoes_and_outlives_a_reload(ca: TestCA) -> None:
    """wss:// to ringlb's own replicas through the HTTPS listener; SIGHUP leaves the tunnel
    open; the replica closing a tunnel closes the client's TLS connection."""
    port = free_port()
    balancer = BalancerProcess(
        "--tls-port",
        str(port),
        "--tls-cert",
        str(ca.dir / "lb.crt"),
        "--tls-key",
        str(ca.dir / "lb.key"),
    )
    try:
        await asyncio.to_thread(balancer.start)
        async with connect(f"wss://localhost:{port}/ws", ssl=trusting(ca), max_size=None) as ws:
            for size in (5, 1 << 20):
                message = b"w" * size
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), BOUND) == message
            balancer.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            await asyncio.to_thread(wait_until, lambda: "reloaded" in balancer.log(), BOUND)
            await ws.send("after the reload")  # the tunnel goes on
            assert await asyncio.wait_for(ws.recv(), BOUND) == "after the reload"
        url = f"wss://localhost:{port}/ws?close_after=1"
        async with connect(url, ssl=trusting(ca)) as ws:  # the replica closes this one
            await ws.send("last")
            assert await ws.recv() == "last"
            await asyncio.wait_for(ws.wait_closed(), BOUND)
            assert ws.close_reason == "close_after"
    finally:
        await asyncio.to_thread(balancer.cleanup)


def replica_over_tls(ca: TestCA) -> str:
    """A --replica-command running ringlb's replica over HTTPS (a certificate for 127.0.0.1)."""
    issued = ca.issue("replica", "127.0.0.1")
    return (
        "{python} -m ringlb replica --id {name} --host {host} --port {port} "
        f"--tls-cert {issued.cert} --tls-key {issued.key}"
    )


async def test_upstream_tls_verifies_the_replicas_and_carries_requests_and_tunnels(
    ca: TestCA,
) -> None:
    balancer = BalancerProcess(
        "--replicas", "2", "--upstream-tls", "true", "--upstream-tls-ca", str(ca.path),
        "--replica-command", replica_over_tls(ca),
    )  # fmt: skip
    try:
        await asyncio.to_thread(balancer.start)
        reply = await asyncio.to_thread(balancer.get, "/home")
        assert reply.status == 200 and b"Hello from Server" in reply.body
        async with connect(f"ws://127.0.0.1:{balancer.port}/ws") as ws:
            await ws.send("over tls both ways")
            assert await asyncio.wait_for(ws.recv(), BOUND) == "over tls both ways"
    finally:
        await asyncio.to_thread(balancer.cleanup)


def test_upstream_tls_refuses_replicas_it_cannot_verify(ca: TestCA, tmp_path: Path) -> None:
    stranger = TestCA(tmp_path, "some other CA")
    balancer = BalancerProcess(
        "--replicas", "1", "--replica-start-timeout", "2", "--upstream-tls", "true",
        "--upstream-tls-ca", str(stranger.path), "--replica-command", replica_over_tls(ca),
    )  # fmt: skip
    try:
        with pytest.raises(RuntimeError, match="exited"):
            balancer.start()
        assert "failed to start" in balancer.log()
    finally:
        balancer.cleanup()
