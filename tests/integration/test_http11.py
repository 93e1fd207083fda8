"""HTTP/1.1 behaviour of the data plane, byte for byte, with a raw-socket client.

The replicas are real processes running tests/echo_replica.py (via --replica-command),
which echo what reached them, so each test sees both sides of the proxy.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtest import BalancerProcess

ECHO = Path(__file__).resolve().parent.parent / "echo_replica.py"


@pytest.fixture(scope="module")
def lb() -> Iterator[BalancerProcess]:
    command = f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}"
    balancer = BalancerProcess(
        "--replica-command",
        command,
        "--client-header-timeout",
        "1",
        "--client-body-timeout",
        "1",
        "--client-idle-timeout",
        "2",
        "--max-headers",
        "20",
    )
    try:
        yield balancer.start()
    finally:
        balancer.cleanup()


class Raw:
    """A raw HTTP/1.1 client on one socket: send bytes, read whole responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, head: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a full head: {self.buffer!r}")
        head_bytes, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head_bytes.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head or status in (100, 204, 304) else int(headers.get(b"content-length", 0))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed inside a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(lb: BalancerProcess) -> Iterator[Raw]:
    client = Raw(lb.port)
    yield client
    client.close()


def get(target: str, *headers: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: lb.test", *headers, "", ""]
    return "\r\n".join(lines).encode()


def echoed(body: bytes) -> dict:
    doc = json.loads(body)
    doc["h"] = {k.lower(): v for k, v in doc["headers"]}
    return doc


def test_keep_alive_serves_many_requests_on_one_connection(raw: Raw) -> None:
    for i in range(5):
        raw.send(get(f"/echo?i={i}"))
        status, headers, body = raw.response()
        assert status == 200 and b"connection" not in headers
        assert echoed(body)["target"] == f"/echo?i={i}"


def test_pipelined_requests_are_answered_in_order(raw: Raw) -> None:
    raw.send(b"".join(get(f"/echo?n={i}", f"X-Request-ID: {100000 + i * 7919}") for i in range(8)))
    targets = [echoed(raw.response()[2])["target"] for _ in range(8)]
    assert targets == [f"/echo?n={i}" for i in range(8)]


def test_hop_by_hop_headers_are_not_forwarded(raw: Raw) -> None:
    raw.send(
        get(
            "/echo",
            "Connection: keep-alive, X-Secret-Hop",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "Proxy-Connection: keep-alive",
            "X-Secret-Hop: 1",
            "X-End-To-End: kept",
        )
    )
    forwarded = echoed(raw.response()[2])["h"]
    for name in (
        "connection",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "x-secret-hop",
        "upgrade",
    ):
        assert name not in forwarded, name
    assert forwarded["x-end-to-end"] == "kept"


def test_forwarding_headers_are_added_and_host_preserved(raw: Raw) -> None:
    raw.send(get("/echo"))
    forwarded = echoed(raw.response()[2])["h"]
    assert forwarded["host"] == "lb.test"
    assert forwarded["x-forwarded-for"] == "127.0.0.1"
    assert forwarded["x-forwarded-proto"] == "http"
    assert forwarded["via"] == "1.1 ringlb"
    raw.send(get("/echo", "X-Forwarded-For: 203.0.113.9", "Via: 1.0 edge"))
    forwarded = echoed(raw.response()[2])["h"]
    assert forwarded["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert forwarded["via"] == "1.0 edge, 1.1 ringlb"


def test_a_request_in_one_read_and_in_pieces_reaches_the_replica_alike(raw: Raw) -> None:
    """A read holding one whole plain request skips the parser (ringlb.dataplane.plain); the same
    bytes in two reads go through it. The replica sees the same request either way, and the
    same X-Request-ID routes it to the same replica."""
    request = get("/echo?same=1", "User-Agent: t/1", "X-Request-ID: 123456", "Accept: */*")
    raw.send(request)
    whole = echoed(raw.response()[2])
    raw.send(request[:20])
    time.sleep(0.2)
    raw.send(request[20:])
    pieces = echoed(raw.response()[2])
    assert whole["headers"] == pieces["headers"]
    assert whole["headers"][-3:] == [
        ["X-Forwarded-For", "127.0.0.1"],
        ["X-Forwarded-Proto", "http"],
        ["Via", "1.1 ringlb"],
    ]
    assert (whole["target"], whole["server"]) == (pieces["target"], pieces["server"])


FIELD_NAMES = st.sampled_from(["Accept", "User-Agent", "X-Request-ID", "Cookie", "X-Trace", "a-b"])
FIELD_VALUES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.one_of(st.just("echo"), st.text(st.sampled_from("abcXYZ019-._~%/"), max_size=12)),
    query=st.one_of(st.just(""), st.text(st.sampled_from("a=1&b?/"), max_size=8)),
    # One field of each name: the replica (aiohttp) refuses a repeated User-Agent with 400.
    fields=st.lists(
        st.tuples(FIELD_NAMES, st.sampled_from([": ", ":", ":  "]), FIELD_VALUES),
        max_size=5,
        unique_by=lambda field: field[0],
    ),
)
def test_any_plain_request_reaches_the_replica_as_the_parser_path_sends_it(
    lb: BalancerProcess, path: str, query: str, fields: list[tuple[str, str, str]]
) -> None:
    """For generated plain requests, one read (the plain path) and the same bytes split in
    two reads (the parser) must give the replica the same target and fields (on /echo), or
    the client the same answer (elsewhere: the contract's 400 naming the path)."""
    target = "/" + path + ("?" + query if query else "")
    lines = [f"GET {target} HTTP/1.1", "Host: lb.test"]
    lines += [f"{name}{separator}{value}" for name, separator, value in fields]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    seen = []
    for pieces in ([request], [request[:10], request[10:]]):
        client = Raw(lb.port)
        try:
            for piece in pieces:
                client.send(piece)
                time.sleep(0.05)
            status, _, body = client.response()
        finally:
            client.close()
        seen.append((status, echoed(body)["headers"] if status == 200 else body))
    assert seen[0] == seen[1]
    assert seen[0][0] == (200 if path == "echo" else 400)


def test_head_204_and_304_carry_no_body(raw: Raw) -> None:
    raw.send(get("/home"))
    _, headers, body = raw.response()
    raw.send(b"HEAD /home HTTP/1.1\r\nHost: x\r\n\r\n")
    status, head_headers, _ = raw.response(head=True)
    assert status == 200 and head_headers[b"content-length"] == headers[b"content-length"]
    for code in (204, 304):
        raw.send(get(f"/status/{code}"))
        status, headers, body = raw.response()
        assert status == code and body == b"" and b"content-length" not in headers
    # Nothing stray on the wire: the next answer parses cleanly.
    raw.send(get("/echo?after"))
    assert echoed(raw.response()[2])["target"] == "/echo?after"


def test_request_bodies_content_length_and_chunked(raw: Raw) -> None:
    payload = bytes(range(256)) * 1000
    raw.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
    )
    doc = echoed(raw.response()[2])
    assert doc["body_length"] == len(payload)
    chunks = [payload[i : i + 7000] for i in range(0, len(payload), 7000)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    raw.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    doc2 = echoed(raw.response()[2])
    assert doc2["method"] == "PUT"
    assert (doc2["body_length"], doc2["body_sha256"]) == (doc["body_length"], doc["body_sha256"])


def test_expect_100_continue_is_answered(raw: Raw) -> None:
    raw.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = raw.response()
    assert status == 100
    raw.send(b"hello")
    doc = echoed(raw.response()[2])
    assert doc["body_length"] == 5 and "expect" not in doc["h"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",
        b"GET /home HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        # Smuggling patterns: both framings, or two different lengths.
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    ],
    ids=["garbage", "bad-header", "cl-and-te", "two-lengths"],
)
def test_malformed_and_smuggling_requests_get_400_and_close(raw: Raw, request_bytes: bytes) -> None:
    raw.send(request_bytes)
    status, headers, body = raw.response()
    assert status == 400
    assert headers[b"connection"] == b"close"
    assert json.loads(body)["status"] == "failure"
    assert raw.closed_by_peer()


def test_slow_client_is_cut_off(raw: Raw) -> None:
    """One byte every 0.2 s: the header deadline (1 s here) ends it with 408."""
    started = time.monotonic()
    answer = b""
    for byte in get("/home"):
        try:
            raw.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.2)
        raw.sock.setblocking(False)
        try:
            answer += raw.sock.recv(4096)
        except BlockingIOError:
            pass
        finally:
            raw.sock.setblocking(True)
        if answer or time.monotonic() - started > 8:
            break
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"Request headers not received within 1 s" in answer


def test_stalled_body_is_cut_off(raw: Raw) -> None:
    raw.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    status, _, body = raw.response()
    assert status == 408 and b"Request body stalled for 1 s" in body
    assert raw.closed_by_peer()


def test_idle_keep_alive_connection_is_closed(raw: Raw) -> None:
    raw.send(get("/home"))
    assert raw.response()[0] == 200
    raw.sock.settimeout(6)
    assert raw.closed_by_peer(), "idle timeout is 2 s here"


def test_too_many_headers_get_431(raw: Raw) -> None:
    raw.send(get("/home", *(f"X-H{i}: v" for i in range(25))))
    status, _, body = raw.response()
    assert status == 431 and json.loads(body)["status"] == "failure"


def test_oversized_header_block_gets_431(lb: BalancerProcess) -> None:
    client = Raw(lb.port)
    try:
        client.send(get("/home", "X-Big: " + "a" * 70_000))
        assert client.response()[0] == 431
    finally:
        client.close()


def test_an_upgrade_the_replica_refuses_is_answered_then_the_connection_closed(
    raw: Raw,
) -> None:
    """The Upgrade reaches the replica; it answers 200 instead of 101: that answer is
    relayed, and the connection closes (the client may already speak the new protocol)."""
    raw.send(get("/echo", "Connection: Upgrade", "Upgrade: websocket"))
    status, headers, body = raw.response()
    assert status == 200 and headers[b"connection"] == b"close"
    forwarded = echoed(body)["h"]
    assert forwarded["upgrade"] == "websocket" and forwarded["connection"] == "Upgrade"
    assert raw.closed_by_peer()


def test_an_h2c_upgrade_is_ignored_and_the_connection_goes_on(raw: Raw) -> None:
    """h2c is refused by ignoring it (RFC 9110 7.8): an HTTP/1.1 answer, no Upgrade sent
    on, and the next request on the connection is answered too."""
    upgrade = ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABk")
    raw.send(get("/echo?first", *upgrade) + get("/echo?second"))
    status, headers, body = raw.response()
    assert status == 200 and b"connection" not in headers
    assert "upgrade" not in echoed(body)["h"] and "http2-settings" not in echoed(body)["h"]
    status, _, body = raw.response()
    assert status == 200 and echoed(body)["target"] == "/echo?second"


def test_connect_is_answered_then_the_connection_closed(raw: Raw) -> None:
    raw.send(b"CONNECT lb.test:443 HTTP/1.1\r\nHost: lb.test:443\r\n\r\n")
    status, headers, _ = raw.response()
    assert headers.get(b"connection") == b"close", status
    assert raw.closed_by_peer()


def test_http_1_0_client_gets_its_connection_closed(lb: BalancerProcess) -> None:
    client = Raw(lb.port)
    try:
        client.send(b"GET /home HTTP/1.0\r\n\r\n")
        status, headers, body = client.response()
        assert status == 200 and headers[b"connection"] == b"close"
        assert body.startswith(b'{"message":"Hello from Server: ')
        assert client.closed_by_peer()
    finally:
        client.close()


def test_a_client_asking_to_close_gets_it_said_and_done(raw: Raw) -> None:
    """The replica's answer to /home could go through byte for byte, but not to a client
    that sent Connection: close: it must say so and close."""
    raw.send(get("/home", "Connection: close"))
    status, headers, body = raw.response()
    assert status == 200 and headers[b"connection"] == b"close"
    assert body.startswith(b'{"message":"Hello from Server: ')
    assert raw.closed_by_peer()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError("VmHWM")


def drain_body(client: Raw, headers: dict[bytes, bytes], pause_every: int = 0) -> int:
    """Reads a Content-Length or chunked body to the end without keeping it; returns its size."""
    received = 0
    if b"content-length" in headers:
        remaining = int(headers[b"content-length"]) - len(client.buffer)
        received, client.buffer = len(client.buffer), b""
        while remaining > 0:
            chunk = client.sock.recv(min(remaining, 1 << 20))
            assert chunk, "closed inside the body"
            remaining -= len(chunk)
            received += len(chunk)
            if pause_every and received // pause_every != (received - len(chunk)) // pause_every:
                time.sleep(0.05)
        return received
    assert headers[b"transfer-encoding"] == b"chunked"
    while True:
        while b"\r\n" not in client.buffer:
            assert client._fill()
        size_line, client.buffer = client.buffer.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(client.buffer) < size + 2:
            client.buffer += client.sock.recv(1 << 20)
        received += size
        client.buffer = client.buffer[size + 2 :]
        if size == 0:
            return received


@pytest.mark.parametrize("framing", ["", "?chunked"])
def test_100_mb_download_streams_with_flat_memory(lb: BalancerProcess, framing: str) -> None:
    size = 100 * 1024 * 1024
    client = Raw(lb.port)
    try:
        client.send(get(f"/bytes/{size}{framing}"))
        while b"\r\n\r\n" not in client.buffer:
            assert client._fill()
        head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
        # A slow reader for the first part: back-pressure must hold the answer upstream.
        assert drain_body(client, headers, pause_every=8 << 20) == size
        # The connection is still usable afterwards.
        client.send(get("/echo?after-download"))
        assert echoed(client.response()[2])["target"] == "/echo?after-download"
    finally:
        client.close()
    peak = peak_rss_mib(lb.pid)
    print(f"\nbalancer peak RSS after a 100 MB download{framing}: {peak:.0f} MiB")
    assert peak < 80, f"the answer was buffered: peak RSS {peak:.0f} MiB"


def upload(client: Raw, size: int, chunked: bool) -> dict:
    """Sends `size` bytes to /echo from a generator (never all in memory); returns the echo."""
    import hashlib

    piece = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    client.send(f"POST /echo HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
    sent = 0
    while sent < size:
        data = piece[: min(len(piece), size - sent)]
        digest.update(data)
        client.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        sent += len(data)
    if chunked:
        client.send(b"0\r\n\r\n")
    doc = echoed(client.response()[2])
    assert doc["body_sha256"] == digest.hexdigest()
    return doc


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_100_mb_upload_streams_with_flat_memory(lb: BalancerProcess, chunked: bool) -> None:
    size = 100 * 1024 * 1024
    client = Raw(lb.port)
    try:
        assert upload(client, size, chunked)["body_length"] == size
        client.send(get("/echo?after-upload"))
        assert echoed(client.response()[2])["target"] == "/echo?after-upload"
    finally:
        client.close()
    peak = peak_rss_mib(lb.pid)
    print(f"\nbalancer peak RSS after a 100 MB upload (chunked={chunked}): {peak:.0f} MiB")
    assert peak < 80, f"the request body was buffered: peak RSS {peak:.0f} MiB"


def test_clients_leaving_mid_upload_do_not_leak_upstream_connections() -> None:
    """With 2 pooled connections, 6 abandoned uploads would exhaust a leaking pool."""
    command = f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}"
    balancer = BalancerProcess(
        "--replica-command", command, "--replicas", "1", "--upstream-pool-size", "2"
    )
    try:
        balancer.start()
        for _ in range(6):
            client = Raw(balancer.port)
            client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
            client.send(b"x" * 500_000)
            time.sleep(0.1)
            client.close()
        client = Raw(balancer.port)
        try:
            client.send(get("/echo?still-serving"))
            assert echoed(client.response()[2])["target"] == "/echo?still-serving"
        finally:
            client.close()
    finally:
        balancer.cleanup()


def test_non_idempotent_request_that_reached_a_replica_is_not_sent_again() -> None:
    """POST to a replica that crashes on reading it: 502, and no second replica crashes."""
    command = f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}"
    balancer = BalancerProcess("--replica-command", command, "--policy", "round_robin")
    try:
        balancer.start()
        before = set(balancer.replicas())
        client = Raw(balancer.port)
        try:
            client.send(b"POST /die HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            status, _, body = client.response()
        finally:
            client.close()
        assert status == 502
        assert json.loads(body)["message"].startswith("<Error> All replicas failed: replica ")
        time.sleep(1.0)  # a wrongly repeated POST would have killed another replica by now
        survivors = before & set(balancer.replicas())
        assert len(survivors) == 2, (before, balancer.replicas())
    finally:
        balancer.cleanup()
