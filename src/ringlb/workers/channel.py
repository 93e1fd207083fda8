"""Channel: the control process and one worker talk over a Unix socket pair, one JSON
object per line.

A message is a dict with an `op`. `ask` sends one with a fresh `id` and returns the answer
(the message whose `re` is that id); `tell` sends without waiting; `serve` reads the other
side's messages and hands each that is not an answer to a handler, in arrival order (the
order membership changes were made in). Nothing here is sent per proxied request: only
membership, admin requests, drains, ejections and counters on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("ringlb.workers")

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None] | None]
LINE_LIMIT = 1 << 24  # a /metrics body or a table of 50 replicas fits many times over


class ChannelClosed(ConnectionError):
    """The other side is gone."""


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self.closed = asyncio.Event()

    @classmethod
    async def over(cls, sock: socket.socket) -> Channel:
        """Returns a channel over one end of a connected socket pair."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def tell(self, message: Message) -> None:
        """Sends `message` (buffered: the transport writes it when the socket takes it)."""
        if self._writer.is_closing():
            raise ChannelClosed("channel closed")
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def question(self, message: Message) -> asyncio.Future[Message]:
        """Sends `message` now; returns the future of the other side's answer to it."""
        ident = next(self._ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        future.add_done_callback(lambda _: self._waiting.pop(ident, None))
        try:
            self.tell({**message, "id": ident})
        except ChannelClosed:
            future.cancel()
            raise
        return future

    async def ask(self, message: Message, timeout: float | None = None) -> Message:
        """Sends `message` and returns the other side's answer to it."""
        return await asyncio.wait_for(self.question(message), timeout)

    def answer(self, question: Message, message: Message) -> None:
        """Sends `message` as the answer to `question`."""
        with contextlib.suppress(ChannelClosed):
            self.tell({**message, "op": "answer", "re": question["id"]})

    async def serve(self, handle: Handler) -> None:
        """Reads messages until the other side closes; answers resolve `ask`s, the rest go
        to `handle` (a coroutine handler runs in a task of its own, so a slow one never
        holds up the next message)."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if message.get("op") == "answer":
                    future = self._waiting.get(message["re"])
                    if future is not None and not future.done():
                        future.set_result(message)
                    continue
                try:
                    result = handle(message)
                except Exception:
                    log.exception("handling a %r message failed", message.get("op"))
                    continue
                if result is not None:
                    task = asyncio.ensure_future(result)
                    tasks.add(task)
                    task.add_done_callback(_finished(tasks))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("channel read failed: %s", exc)
        finally:
            self.closed.set()
            for future in list(self._waiting.values()):
                if not future.done():
                    future.set_exception(ChannelClosed("the other side closed the channel"))
            for task in tasks:
                task.cancel()

    def close(self) -> None:
        self._writer.close()


def _finished(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a channel message failed", exc_info=task.exception())

    return done
