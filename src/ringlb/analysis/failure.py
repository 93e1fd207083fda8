"""A-3, part 2: a steady request stream while one replica is killed without warning.

Measured on one monotonic clock from the start of the stream: when the replica was killed,
when it left `/rep` (detection), when a replacement appeared in `/rep` and answered
`/home` (serving), and every request that failed on the way.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ringlb.analysis import charts
from ringlb.analysis.client import LoadClient, LoadRun, server_id_of
from ringlb.analysis.target import Target

POLL_INTERVAL = 0.02
RECOVERY_TIMEOUT = 60.0
BIN_SECONDS = 0.5


@dataclass
class FailureResult:
    victim: str
    how: str
    kill_at: float
    detected_at: float | None
    replacement: str | None
    listed_at: float | None  # replacement first seen in /rep
    serving_at: float | None  # replacement first answered /home (directly or via the stream)
    serving_how: str
    run: LoadRun
    rate: float
    replicas_before: list[str]
    replicas_after: list[str]

    def _since_kill(self, t: float | None) -> float | None:
        return None if t is None else round(t - self.kill_at, 3)

    def latency(self) -> dict[str, float]:
        """Returns latency percentiles (ms) over the stream and for the second after the kill."""
        every = sorted(o.done - o.sent for o in self.run.outcomes)
        after = sorted(
            o.done - o.sent for o in self.run.outcomes if 0 <= o.sent - self.kill_at < 1.0
        )

        def pick(values: list[float], q: float) -> float:
            return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 1)

        result = {"p50": pick(every, 0.5), "p99": pick(every, 0.99), "max": pick(every, 1.0)}
        if after:
            result["max_in_1s_after_kill"] = pick(after, 1.0)
        return result

    def as_dict(self) -> dict[str, object]:
        return {
            "victim": self.victim,
            "how": self.how,
            "rate_rps": self.rate,
            "kill_at_s": round(self.kill_at, 3),
            "detection_s": self._since_kill(self.detected_at),
            "replacement": self.replacement,
            "replacement_listed_s": self._since_kill(self.listed_at),
            "replacement_serving_s": self._since_kill(self.serving_at),
            "serving_measured_by": self.serving_how,
            "client_errors": self.run.failed,
            "latency_ms": self.latency(),
            "errors_by_kind": dict(self.run.failures),
            "replicas_before": self.replicas_before,
            "replicas_after": self.replicas_after,
            "load": self.run.summary(),
        }


async def _answers(session: aiohttp.ClientSession, url: str, name: str) -> bool:
    try:
        async with session.get(url + "/home") as response:
            return response.status == 200 and server_id_of(await response.read()) == name
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError):
        return False


async def run(
    client: LoadClient,
    target: Target,
    keys: Sequence[int],
    *,
    rate: float,
    kill_at: float,
    victim: str,
) -> FailureResult:
    """Streams `keys` at `rate`/s, kills `victim` at `kill_at` s, and times the recovery.

    Raises LookupError (after stopping the stream) when the target cannot kill a replica.
    """
    before = await client.replicas()
    if victim not in before:
        victim = before[0]
    start = time.monotonic()
    stream = asyncio.create_task(client.stream(keys, rate, start, label="A-3 stream"))
    await asyncio.sleep(max(0.0, kill_at - (time.monotonic() - start)))
    killed = time.monotonic() - start
    try:
        how = target.kill_replica(victim)
    except LookupError:
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
        raise

    detected = listed = serving = None
    replacement: str | None = None
    serving_how = "not observed"
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as direct:
        # Polls past the end of the stream if need be: recovery time must not depend on
        # how long the stream is, only on RECOVERY_TIMEOUT.
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while (detected is None or serving is None) and time.monotonic() < deadline:
            now = await client.replicas()
            t = time.monotonic() - start
            if detected is None and victim not in now:
                detected = t
            new = [n for n in now if n not in before]
            if new and listed is None:
                replacement, listed = new[0], t
            if replacement is not None and serving is None:
                # /proc is scanned in a thread: the stream must keep its pace meanwhile.
                url = await asyncio.to_thread(target.direct_url, replacement)
                if url is None:
                    # Not reachable from here (a container): /rep lists only replicas that
                    # answered a heartbeat, so being listed is being able to serve.
                    serving, serving_how = listed, "listed in /rep (admitted after a heartbeat)"
                elif await _answers(direct, url, replacement):
                    serving, serving_how = time.monotonic() - start, "direct GET /home"
            await asyncio.sleep(POLL_INTERVAL)
    load = await stream
    # The stream itself may show the replacement answering earlier than the poll did.
    via_stream = [o.done for o in load.outcomes if replacement and o.replica == replacement]
    if via_stream and (serving is None or min(via_stream) < serving):
        serving, serving_how = min(via_stream), "first answer in the request stream"
    return FailureResult(
        victim,
        how,
        killed,
        detected,
        replacement,
        listed,
        serving,
        serving_how,
        load,
        rate,
        before,
        await client.replicas(),
    )


def chart(result: FailureResult, path: Path) -> Path:
    """Draws requests per second per replica over time, with the kill and recovery marked."""
    # Whole bins only: a partial last bin would look like a drop in traffic.
    last = max(0, int(result.run.sent / result.rate / BIN_SECONDS) - 1)
    bins: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    errors: dict[int, int] = defaultdict(int)
    for outcome in result.run.outcomes:
        # Binned by answer time: the rate at which each replica actually served.
        b = int(outcome.done // BIN_SECONDS)
        if b > last:
            continue
        if outcome.replica is None:
            errors[b] += 1
        else:
            bins[outcome.replica][b] += 1
    xs = [(b + 0.5) * BIN_SECONDS for b in range(last + 1)]
    fig, (ax,) = charts.figure(width=11, height=5.2)
    order = [*result.replicas_before, *(n for n in bins if n not in result.replicas_before)]
    for name in order:
        series = bins.get(name, {})
        label = name + (" (killed)" if name == result.victim else "")
        label += " (replacement)" if name == result.replacement else ""
        ax.plot(
            xs, [series.get(b, 0) / BIN_SECONDS for b in range(last + 1)], label=label, marker="."
        )
    if errors:
        ax.bar(
            xs,
            [errors.get(b, 0) / BIN_SECONDS for b in range(last + 1)],
            width=BIN_SECONDS,
            color="red",
            alpha=0.4,
            label="client-visible errors",
        )
    marks = [
        (result.kill_at, "red", f"kill -9 {result.victim}"),
        (result.detected_at, "orange", "gone from /rep"),
        (result.serving_at, "green", f"{result.replacement} serving"),
    ]
    for t, color, label in marks:
        if t is not None:
            ax.axvline(t, color=color, linestyle="--", label=f"{label} (t={t:.2f} s)")
    ax.set_title(
        f"A-3: requests per second per replica, steady {result.rate:g} req/s, one replica "
        f"killed\n{result.run.failed} client-visible errors out of {result.run.sent:,} requests"
    )
    ax.set_xlabel("time since the stream started (s), requests binned by answer time")
    ax.set_ylabel(f"requests per second ({BIN_SECONDS:g} s bins)")
    ax.legend(fontsize=8, loc="center right")
    return charts.save(fig, path)
