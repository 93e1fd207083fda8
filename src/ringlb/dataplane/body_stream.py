"""BodyStream: a request body on its way from the client to a replica, never all in memory.

The client connection feeds pieces as they are parsed; the upstream connection takes them
as the replica's socket accepts them. Between the two at most HIGH_WATER bytes wait: above
it the client's socket stops being read (back-pressure), below LOW_WATER it is read again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

# Bytes of one body held between the client and the replica: the memory bound per upload.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class BodyAborted(Exception):
    """The body will not come: the client left, stalled, or sent a malformed one."""


class BodyStream:
    __slots__ = (
        "_aborted",
        "_chunks",
        "_done",
        "_pause",
        "_paused",
        "_resume",
        "_size",
        "_waiter",
        "consumed",
        "length",
        "received",
    )

    def __init__(
        self, length: int | None, pause: Callable[[], None], resume: Callable[[], None]
    ) -> None:
        self.length = length  # Content-Length, or None for a chunked body
        self.consumed = 0  # bytes handed to a replica: once > 0, no retry elsewhere
        self.received = 0  # bytes the client has sent so far
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._aborted = False
        self._waiter: asyncio.Future[None] | None = None
        self._pause, self._resume = pause, resume
        self._paused = False

    @property
    def complete(self) -> bool:
        """Whether the client sent the whole body and all of it was handed on."""
        return self._done and not self._chunks

    @property
    def ready(self) -> bool:
        """Whether `next` answers without waiting for the client."""
        return bool(self._chunks) or self._done or self._aborted

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def abort(self) -> None:
        self._aborted = True
        self._chunks.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> bytes | None:
        """Returns the next piece, or None at the end. Raises BodyAborted."""
        while not self._chunks:
            if self._aborted:
                raise BodyAborted("the request body broke off")
            if self._done:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self.consumed += len(chunk)
        if self._paused and self._size < LOW_WATER:
            self._paused = False
            self._resume()
        return chunk
