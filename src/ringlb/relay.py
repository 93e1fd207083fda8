"""ResponseRelay: writes one replica answer to the client while it arrives (no buffering).

The upstream connection calls `start` with the status and headers, `body` for each piece,
and `end`. The relay chooses the client-side framing: the replica's Content-Length when it
sent one, otherwise chunked for HTTP/1.1 clients or close-delimited for HTTP/1.0 ones. A
replica's 404 is replaced by the contract's 400. Back-pressure: when the client's socket
buffer fills, the client connection pauses reading from the replica (see `proxy.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from ringlb import contract, http11

_NO_BODY = (204, 304)


class ResponseRelay:
    __slots__ = (
        "_chunked",
        "_discard",
        "_head",
        "_http11",
        "_keep_alive",
        "_path",
        "_write",
        "started",
    )

    def __init__(
        self,
        write: Callable[[bytes], None],
        path: str,
        *,
        head: bool,
        keep_alive: bool,
        client_version: str,
    ) -> None:
        self._write = write
        self._path = path
        self._head = head
        self._keep_alive = keep_alive
        self._http11 = client_version == "1.1"
        self._chunked = False
        self._discard = False
        self.started = False  # once true, a failure can no longer be retried elsewhere

    @property
    def keep_alive(self) -> bool:
        """Whether the client connection may carry another request after this answer."""
        return self._keep_alive

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        if status == 404:
            # The contract's 400 replaces the replica's 404; its body is dropped.
            self._discard = True
            body = contract.unknown_endpoint(self._path)
            self._write(
                http11.json_response(400, body, keep_alive=self._keep_alive, head=self._head)
            )
            return
        parts = [http11.status_line(status)]
        parts.extend(b"%s: %s\r\n" % (n, v) for n, v in http11.forwardable(headers))
        length = http11.content_length(headers)
        if status >= 200 and status not in _NO_BODY:
            if length is not None:
                parts.append(b"Content-Length: %d\r\n" % length)
            elif self._head:
                pass
            elif self._http11:
                self._chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self._keep_alive = False  # the end of the body is the end of the connection
        if not self._keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        self._write(b"".join(parts))

    def body(self, data: bytes) -> None:
        if self._discard or self._head:
            return
        if self._chunked:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._write(data)

    def end(self) -> None:
        if self._chunked and not self._discard:
            self._write(b"0\r\n\r\n")
