"""The event-loop stall of a membership change under load: how long requests wait while a
routing table is rebuilt.

Runs a real balancer in this process (process runtime, three replicas, the default
`maglev` policy unless told), wrk against it in a subprocess, and a probe task on the same
event loop that sleeps 1 ms at a time and records how late it wakes (the loop's lag: what
every request on the loop waits too). While wrk runs, it adds one replica and removes it
again, `--changes` times, exactly as `/add` and `/rm` do (`ReplicaSet.add`/`remove`).
Reports the largest lag in the window of each change (from its first new snapshot to the
end of the change and its complete table, plus 50 ms; a removal's window also holds its
drain and its second rebuild) and, for comparison, the largest lag under the same load
outside them. Those are wall-clock lags: on a busy machine the OS preempting the process
shows in both. So it also reports the most CPU time one turn of the loop spent building
tables in each change (`TableBuilder.longest_turn`, thread CPU time): the stall the rebuild
itself adds. And the largest lag while an added replica starts (`start_lag_max_ms`, from
`/add` to its first snapshot: the process runtime's spawn, then waiting for its heartbeat).
The balancer's start-up heap is frozen first, as `ringlb serve` does.

`--one-shot` builds every table at once on the loop, as before issue 14 (the "before"
figure). Prints one JSON object.

    .venv/bin/python bench/stall.py [--one-shot] [--policy maglev] [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

from ringlb.app import Balancer
from ringlb.config import Settings
from ringlb.contract import MembershipRequest
from ringlb.control import tables
from ringlb.eventloop import install_fast_loop
from ringlb.memory import freeze_start_up_heap

PROBE = 0.001  # the probe's sleep (s)
MARGIN = 0.05  # a rebuild window extends this long past its complete table (s)


class LagProbe:
    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (wake time, lag s)

    async def run(self) -> None:
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        while True:
            began = time.perf_counter()
            await asyncio.sleep(PROBE)
            woke = time.perf_counter()
            self.samples.append((woke, max(0.0, woke - began - PROBE)))


async def settled_at(rs) -> float:
    """Returns the time at which the routing table next holds every change so far."""
    await rs.settled()
    return time.perf_counter()


async def measure(args: argparse.Namespace) -> dict:
    settings = Settings(port=0, policy=args.policy, log_level="WARNING", seed=7)
    balancer = Balancer(settings)
    await balancer.start()
    freeze_start_up_heap()  # as `ringlb serve` does once started
    probe = LagProbe()
    probing = asyncio.ensure_future(probe.run())
    windows: list[tuple[float, float]] = []
    starts: list[tuple[float, float]] = []  # per addition: its replica's start
    turns: list[float] = []  # per change: the most CPU one loop turn spent on tables
    durations: list[float] = []  # per change: from its first snapshot to its complete table
    completes: list[asyncio.Future[float]] = []
    rs = balancer.replicaset
    try:
        wrk = await asyncio.create_subprocess_exec(
            "wrk",
            f"-t{args.threads}",
            "-c64",
            f"-d{args.seconds}s",
            f"http://127.0.0.1:{balancer.port}/home",
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(2)  # load settles
        gap = (args.seconds - 4) / max(1, 2 * args.changes)
        for _ in range(args.changes):
            for change in (
                lambda: rs.add(MembershipRequest(n=1, hostnames=["stall_probe"])),
                lambda: rs.remove(MembershipRequest(n=1, hostnames=["stall_probe"])),
            ):
                # The window covers the rebuild only: a start or a drain waits on I/O.
                published = asyncio.get_running_loop().create_future()

                def seen(future=published) -> None:
                    if not future.done():
                        future.set_result(time.perf_counter())
                        completes.append(asyncio.ensure_future(settled_at(rs)))

                rs.on_change.append(seen)
                rs.tables.longest_turn = 0.0
                began = time.perf_counter()
                await change()  # a removal rebuilds twice: out of the ring, then forgotten
                rs.on_change.remove(seen)
                await rs.settled()
                durations.append((await completes[-1]) - published.result())
                windows.append((published.result(), time.perf_counter() + MARGIN))
                if len(windows) % 2:  # an addition: before its first snapshot, the start
                    starts.append((began, published.result()))
                turns.append(rs.tables.longest_turn)
                await asyncio.sleep(gap)
        output = (await wrk.communicate())[0].decode()
    finally:
        probing.cancel()
        await balancer.stop()
    inside = [lag for t, lag in probe.samples if any(a <= t <= b for a, b in windows)]
    outside = [lag for t, lag in probe.samples if not any(a <= t <= b for a, b in windows)]
    starting = [lag for t, lag in probe.samples if any(a <= t <= b for a, b in starts)]
    rps = next((line.split()[-1] for line in output.splitlines() if "Requests/sec" in line), "?")
    return {
        "policy": args.policy,
        "build": "one-shot" if args.one_shot else "sliced",
        "changes": len(windows),
        "wrk_threads": args.threads,
        "rps": rps,
        "build_turn_cpu_max_ms": round(max(turns, default=0) * 1e3, 2),
        "build_turn_cpu_median_ms": round(statistics.median(turns) * 1e3, 2) if turns else 0,
        "change_to_complete_table_median_ms": round(statistics.median(durations) * 1e3, 1)
        if durations
        else 0,
        "stall_max_ms": round(max(inside, default=0) * 1e3, 2),
        "stall_median_of_window_max_ms": round(
            statistics.median(
                max((lag for t, lag in probe.samples if a <= t <= b), default=0) for a, b in windows
            )
            * 1e3,
            2,
        ),
        "start_lag_max_ms": round(max(starting, default=0) * 1e3, 2),
        "lag_max_outside_ms": round(max(outside, default=0) * 1e3, 2),
        "lag_p99_outside_ms": round(
            (sorted(outside)[int(0.99 * len(outside))] if outside else 0) * 1e3, 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="maglev")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--changes", type=int, default=4, help="add+remove pairs")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--one-shot", action="store_true", help="tables built at once")
    args = parser.parse_args()
    if args.one_shot:
        tables.SLICE_BUDGET = float("inf")  # the whole build in the first slice
    install_fast_loop()
    print(json.dumps(asyncio.run(measure(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
