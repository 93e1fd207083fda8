"""The experiment client: asynchronous requests with bounded concurrency, nothing dropped.

Every request sent is accounted for: it either names the replica that answered (the last
token of the `/home` message is the SERVER_ID, CONTRACT.md) or is counted as a failure
with its reason. Request ids are random 6-digit numbers from a seeded generator, sent as
`X-Request-ID`, so a rerun sends the same ids and gets the same distribution.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from tqdm import tqdm

from ringlb.analysis.options import DEFAULT_CONCURRENCY

REQUEST_ID_HEADER = "X-Request-ID"


def request_ids(count: int, seed: int) -> list[int]:
    """Returns `count` random 6-digit ids (100000..999999), the same for the same seed."""
    rng = random.Random(seed)
    return [rng.randint(100000, 999999) for _ in range(count)]


def server_id_of(body: bytes) -> str:
    """Returns the SERVER_ID of a `/home` answer: the last token of its message."""
    return json.loads(body)["message"].split()[-1]


@dataclass
class Outcome:
    """One request: when it was sent and answered (seconds from the run's start), and by
    whom (`replica`), or why it failed (`error`)."""

    key: int
    sent: float
    done: float
    replica: str | None = None
    error: str | None = None


@dataclass
class LoadRun:
    """The outcomes of one run, in the order the requests were issued."""

    outcomes: list[Outcome]
    elapsed: float
    concurrency: int
    counts: Counter[str] = field(init=False)
    failures: Counter[str] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counter(o.replica for o in self.outcomes if o.replica is not None)
        self.failures = Counter(o.error for o in self.outcomes if o.error is not None)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def throughput(self) -> float:
        """Returns the achieved requests per second (answered or failed)."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "answered": self.sent - self.failed,
            "failed": self.failed,
            "failures": dict(self.failures),
            "counts": dict(sorted(self.counts.items())),
            "elapsed_s": round(self.elapsed, 3),
            "throughput_rps": round(self.throughput, 1),
            "concurrency": self.concurrency,
        }


class LoadClient:
    """Sends GET requests to one balancer; use as `async with LoadClient(url) as client`."""

    def __init__(
        self, base_url: str, concurrency: int = DEFAULT_CONCURRENCY, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=None),
            timeout=self._timeout,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use LoadClient as an async context manager"
        return self._session

    async def one(self, key: int, start: float, path: str = "/home") -> Outcome:
        """Returns the outcome of one request; never raises for a failed request."""
        sent = time.monotonic() - start
        try:
            async with self.session.get(
                self.base_url + path, headers={REQUEST_ID_HEADER: str(key)}
            ) as response:
                body = await response.read()
            if response.status != 200:
                error = f"HTTP {response.status}"
            else:
                try:
                    return Outcome(key, sent, time.monotonic() - start, server_id_of(body))
                except (ValueError, KeyError, IndexError, AttributeError, TypeError):
                    error = "unparsable body"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        return Outcome(key, sent, time.monotonic() - start, error=error)

    async def burst(self, keys: Sequence[int], label: str = "requests") -> LoadRun:
        """Returns the outcomes of one request per key, at most `concurrency` in flight."""
        start = time.monotonic()
        gate = asyncio.Semaphore(self.concurrency)
        bar = tqdm(total=len(keys), desc=label, unit="req", mininterval=0.5, leave=False)

        async def bounded(key: int) -> Outcome:
            async with gate:
                outcome = await self.one(key, start)
            bar.update()
            return outcome

        try:
            outcomes = await asyncio.gather(*(bounded(k) for k in keys))
        finally:
            bar.close()
        run = LoadRun(list(outcomes), time.monotonic() - start, self.concurrency)
        tqdm.write(f"{label}: {run.sent} requests, {run.failed} failed, {run.throughput:.0f} req/s")
        return run

    async def stream(
        self, keys: Sequence[int], rate: float, start: float, label: str = "stream"
    ) -> LoadRun:
        """Returns the outcomes of requests issued at a steady `rate` per second.

        Request k starts at `start` + k / rate (monotonic clock) whatever the answers do, so
        a slow or failing replica shows up as errors or latency, not as a lower offered load.
        """
        bar = tqdm(total=len(keys), desc=label, unit="req", mininterval=0.5, leave=False)
        tasks = []
        for index, key in enumerate(keys):
            delay = index / rate - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(key, start))
            task.add_done_callback(lambda _t: bar.update())
            tasks.append(task)
        try:
            outcomes = await asyncio.gather(*tasks)
        finally:
            bar.close()
        return LoadRun(list(outcomes), time.monotonic() - start, len(keys))

    async def call(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """Returns the raw answer to one request (for the admin endpoints and A-3)."""
        async with self.session.request(method, self.base_url + path, data=body) as response:
            return Reply(response.status, dict(response.headers), await response.read())

    async def replicas(self) -> list[str]:
        """Returns the replica names of `GET /rep`, in join order."""
        reply = await self.call("GET", "/rep")
        return reply.json()["message"]["replicas"]

    async def change(self, path: str, n: int, hostnames: Sequence[str] = ()) -> list[str]:
        """Calls `/add` or `/rm` and returns the new replica list; raises on an error."""
        method = "POST" if path == "/add" else "DELETE"
        payload = json.dumps({"n": n, "hostnames": list(hostnames)}).encode()
        reply = await self.call(method, path, payload)
        if reply.status != 200:
            raise RuntimeError(f"{method} {path} answered {reply.status}: {reply.body!r}")
        return reply.json()["message"]["replicas"]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)
