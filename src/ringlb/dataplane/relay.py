"""ResponseRelay: writes one replica answer to the client while it arrives (no buffering).

One relay per attempt. The upstream connection calls `whole` with an answer it holds
entirely and that may go through byte for byte, or else `start` with the status and the
forwardable header lines, `body` for each piece, and `end`. The relay chooses the
client-side framing: the replica's Content-Length when it sent one, otherwise chunked for
HTTP/1.1 clients or close-delimited for HTTP/1.0 ones. A replica's 404 is replaced by the
contract's 400. The head is held until the first piece of body (or the end), so a small
answer leaves in one write, and a replica that dies between its head and its body can
still be retried elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

from ringlb import contract
from ringlb.dataplane import http11
from ringlb.dataplane.request import Request


class ResponseRelay:
    __slots__ = (
        "_chunked",
        "_discard",
        "_pending",
        "_request",
        "_retry_5xx",
        "_write",
        "keep_alive",
        "started",
        "status",
        "swallowed",
    )

    def __init__(self, write: Callable[[bytes], None], request: Request, retry_5xx: bool) -> None:
        self._write = write
        self._request = request
        self._retry_5xx = retry_5xx  # a 5xx is held back: another replica will be tried
        # Whether the client connection may carry another request after this answer.
        self.keep_alive = request.keep_alive
        self.status = 0  # the replica's status, once its head arrived
        # True once a byte reached the client: from then on a failure cannot be retried.
        self.started = False
        self.swallowed = False  # a 5xx held back (nothing of it reaches the client)
        self._chunked = False
        self._discard = False
        self._pending = b""

    def whole(self, status: int, data: bytes) -> bool:
        """Relays a whole plain answer (`ringlb.dataplane.plain.plain_response`) as it is;
        returns False, having done nothing, when it must be rewritten or held back."""
        request = self._request
        if (
            status == 404
            or request.head_only
            or not (request.keep_alive and request.http11)
            or (status >= 500 and self._retry_5xx)
        ):
            return False
        self.status = status
        self.started = True
        self._write(data)
        return True

    def start(self, status: int, header_lines: bytes, length: int | None) -> None:
        """Begins the answer; `header_lines` are serialized, without hop-by-hop fields."""
        self.status = status
        request = self._request
        if status >= 500 and self._retry_5xx:
            self.swallowed = True
            return
        if status == 404:
            # The contract's 400 replaces the replica's 404; its body is dropped.
            self._discard = True
            body = contract.unknown_endpoint(request.path)
            self._pending = http11.json_response(
                400, body, keep_alive=self.keep_alive, head=request.head_only
            )
            return
        framing = b""
        if http11.carries_body(status):
            if length is not None:
                framing = b"Content-Length: %d\r\n" % length
            elif request.head_only:
                pass
            elif request.http11:
                self._chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = False  # the end of the body is the end of the connection
        close = b"" if self.keep_alive else b"Connection: close\r\n"
        self._pending = http11.status_line(status) + header_lines + framing + close + b"\r\n"

    def body(self, data: bytes) -> None:
        if self._discard or self.swallowed or self._request.head_only:
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
        tail = b"0\r\n\r\n" if self._chunked else b""
        if self._pending or tail:
            data, self._pending = self._pending + tail, b""
            self.started = True
            self._write(data)
