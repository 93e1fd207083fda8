"""ResponseRelay: writes one replica answer to the client while it arrives (no buffering).

The upstream connection calls `start` with the status and the forwardable header lines,
`body` for each piece, and `end`. The relay chooses the client-side framing: the replica's
Content-Length when it sent one, otherwise chunked for HTTP/1.1 clients or close-delimited
for HTTP/1.0 ones. A replica's 404 is replaced by the contract's 400. The head is held
until the first piece of body (or the end), so a small answer leaves in one write.
Back-pressure: when the client's socket buffer fills, the client connection pauses
reading from the replica (see `connection.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from ringlb import contract
from ringlb.dataplane import http11

_NO_BODY = (204, 304)


class ResponseRelay:
    __slots__ = (
        "_chunked",
        "_discard",
        "_head",
        "_http11",
        "_keep_alive",
        "_path",
        "_pending",
        "_retry_5xx",
        "_verbatim",
        "_write",
        "started",
        "status",
        "swallowed",
    )

    def __init__(
        self,
        write: Callable[[bytes], None],
        path: str,
        *,
        head: bool,
        keep_alive: bool,
        client_version: str,
        retry_5xx: bool = False,
    ) -> None:
        self._write = write
        self._retry_5xx = retry_5xx
        self.swallowed = False  # a 5xx held back so that another replica gets a try
        self._path = path
        self._head = head
        self._keep_alive = keep_alive
        self._http11 = client_version == "1.1"
        # A plain answer can go out byte for byte: nothing to add (Connection: close) or cut.
        self._verbatim = not head and keep_alive and self._http11
        self._chunked = False
        self._discard = False
        self._pending = b""
        # True once a byte reached the client: from then on a failure cannot be retried
        # elsewhere. The head is held until the first piece of body, so a replica dying
        # between its head and its body is still retried.
        self.started = False
        self.status = 0  # the replica's status, once started

    @property
    def keep_alive(self) -> bool:
        """Whether the client connection may carry another request after this answer."""
        return self._keep_alive

    def whole(self, status: int, data: bytes) -> bool:
        """Relays a whole plain answer (`ringlb.dataplane.plain.plain_response`) as it is; returns
        False, having done nothing, when it must be rewritten or held back instead."""
        if not self._verbatim or status == 404 or (status >= 500 and self._retry_5xx):
            return False
        self.status = status
        self.started = True
        self._write(data)
        return True

    def start(self, status: int, header_lines: bytes, length: int | None) -> None:
        """Begins the answer; `header_lines` are serialized, without hop-by-hop fields."""
        self.status = status
        if status >= 500 and self._retry_5xx:
            self.swallowed = True  # nothing of it reaches the client
            return
        if status == 404:
            # The contract's 400 replaces the replica's 404; its body is dropped.
            self._discard = True
            body = contract.unknown_endpoint(self._path)
            self._pending = http11.json_response(
                400, body, keep_alive=self._keep_alive, head=self._head
            )
            return
        framing = b""
        if status >= 200 and status not in _NO_BODY:
            if length is not None:
                framing = b"Content-Length: %d\r\n" % length
            elif self._head:
                pass
            elif self._http11:
                self._chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                self._keep_alive = False  # the end of the body is the end of the connection
        close = b"" if self._keep_alive else b"Connection: close\r\n"
        self._pending = http11.status_line(status) + header_lines + framing + close + b"\r\n"

    def body(self, data: bytes) -> None:
        if self._discard or self._head or self.swallowed:
            return
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self._pending:
            data, self._pending = self._pending + data, b""
        self.started = True
        self._write(data)

    def end(self) -> None:
        if self.swallowed:
            return
        tail = b"0\r\n\r\n" if self._chunked and not self._discard else b""
        if self._pending or tail:
            data, self._pending = self._pending + tail, b""
            self.started = True
            self._write(data)
