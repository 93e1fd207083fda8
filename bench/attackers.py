"""The hostile clients of `make attack` and the probe that watches a balancer meanwhile.

- `Probe`: a well-behaved client, `GET /home` on a new connection every 0.2 s, each with a
  2 s deadline; it says how much of the service the other clients were left.
- `FloorServer`: an idle process answering 200 at once, with no replica behind it; a second
  probe aimed at it during an attack shows what the machine itself leaves of a loopback
  answer (when it is slow too, the attack's load on the host is the limit, not the
  balancer).
- `Slowhttptest`: one run of Debian's `slowhttptest` (slow headers, slow bodies, slow
  reads), bounded by its own `-l` test length.
- `Holder`: N raw connections that send a fixed payload (a malformed chunked body, or
  nothing at all) and then only listen, recording what the server answers and when it
  closes; each closes by itself after `seconds`.

Every attack is bounded in connections and time and stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PROBE_REQUEST = b"GET /home HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class ProbeResult:
    started: float  # seconds since the probe began
    latency: float  # seconds until the whole answer was read (the deadline when it never was)
    outcome: str  # "200", "status 503: <body>", "timeout", or the exception's name


class Probe:
    """`GET /home` every `interval` seconds on a new connection, each answer due within
    `deadline` seconds; probes are started on a fixed schedule, so a stalled balancer
    gathers probes in flight instead of slowing the schedule down."""

    def __init__(self, port: int, interval: float = 0.2, deadline: float = 2.0) -> None:
        self.port = port
        self.interval = interval
        self.deadline = deadline
        self.results: list[ProbeResult] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Probes until `stop` is set, then waits for the probes in flight."""
        loop = asyncio.get_running_loop()
        begun = loop.time()
        due = begun
        probes = []
        while not stop.is_set():
            probes.append(asyncio.create_task(self._one(loop.time() - begun)))
            due += self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))
        await asyncio.gather(*probes)

    async def _one(self, started: float) -> None:
        began = time.monotonic()
        try:
            outcome = await asyncio.wait_for(self._exchange(), self.deadline)
        except TimeoutError:
            outcome = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = type(exc).__name__
        latency = min(time.monotonic() - began, self.deadline)
        self.results.append(ProbeResult(started, latency, outcome))

    async def _exchange(self) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(PROBE_REQUEST)
            answer = await reader.read(-1)  # Connection: close, so until the server closes
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "no answer"
        if status == "200":
            return status
        return f"status {status}: {body[:80].decode(errors='replace')}"

    def summary(self) -> dict:
        """Returns the share answered 200 in time, the slowest probe (a timed-out one
        counts as the deadline), the longest outage (from the first failed probe of a run
        of failures to the next success), and the failures by kind."""
        results = sorted(self.results, key=lambda r: r.started)
        ok = [r for r in results if r.outcome == "200"]
        outage, failing_since = 0.0, None
        for result in results:
            if result.outcome != "200":
                failing_since = result.started if failing_since is None else failing_since
            elif failing_since is not None:
                outage = max(outage, result.started - failing_since)
                failing_since = None
        if failing_since is not None:
            outage = max(outage, results[-1].started + self.deadline - failing_since)
        return {
            "sent": len(results),
            "ok": len(ok),
            "ok_percent": round(100 * len(ok) / len(results), 1) if results else None,
            "worst_latency_s": round(max((r.latency for r in results), default=0.0), 3),
            "worst_ok_latency_s": round(max((r.latency for r in ok), default=0.0), 3),
            "longest_outage_s": round(outage, 1),
            "failures": dict(Counter(r.outcome for r in results if r.outcome != "200")),
            "timeline": [[round(r.started, 1), round(r.latency, 3), r.outcome] for r in results],
        }


ANSI = re.compile(r"\x1b\[[0-9;]*m")


FLOOR_SERVER = """
import asyncio, sys
ANSWER = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok"
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.head = transport, b""
    def data_received(self, data):
        self.head += data
        if b"\\r\\n\\r\\n" in self.head:
            self.transport.write(ANSWER)
            self.transport.close()
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[1]))
asyncio.run(main())
"""


class FloorServer:
    """A process that answers every request with 200 at once, for at most `lifetime` s."""

    def __init__(self, lifetime: float) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", FLOOR_SERVER, str(lifetime)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait()


@dataclass(frozen=True)
class Slowhttptest:
    """One `slowhttptest` run; `flags` are its options without the URL, the test length
    and the report ones, which `command` adds."""

    flags: str
    path: str
    seconds: int

    def command(self, port: int, report_prefix: Path) -> list[str]:
        url = f"http://127.0.0.1:{port}{self.path}"
        return [*self._args(url), "-g", "-o", str(report_prefix)]

    def describe(self) -> str:
        return shlex.join(self._args(f"http://127.0.0.1:PORT{self.path}"))

    def _args(self, url: str) -> list[str]:
        return ["slowhttptest", *shlex.split(self.flags), "-u", url, "-l", str(self.seconds)]

    async def run(self, port: int, workdir: Path) -> dict:
        """Runs slowhttptest to its end (killed if it overruns its length by 30 s);
        returns what it saw: its connection counts over time (its CSV) and its exit status."""
        prefix = workdir / "slowhttptest"
        out = workdir / "slowhttptest.out"
        with out.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                *self.command(port, prefix),
                stdout=sink,
                stderr=sink,
                stdin=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.wait_for(proc.wait(), self.seconds + 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        return self.report(prefix.with_suffix(".csv"), out, proc.returncode)

    @staticmethod
    def report(csv_path: Path, out_path: Path, returncode: int | None) -> dict:
        rows = []
        if csv_path.exists():
            with csv_path.open() as f:
                rows = [{k: int(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
        text = ANSI.sub("", out_path.read_text(errors="replace"))
        exit_status = re.findall(r"Exit status:\s*(.+)", text)
        errors = re.findall(r"^error:\s+(\d+)", text, re.MULTILINE)
        last = rows[-1] if rows else {}
        return {
            "returncode": returncode,
            "exit_status": exit_status[-1].strip() if exit_status else None,
            "max_connected": max((r.get("Connected", 0) for r in rows), default=0),
            "at_end": {k.lower(): last.get(k, 0) for k in ("Connected", "Pending", "Closed")},
            "errors": int(errors[-1]) if errors else None,
            "timeline": rows,
        }

    @staticmethod
    def saw(report: dict) -> str:
        """Returns what slowhttptest saw, in one line of the table."""
        end = report["at_end"]
        text = (
            f"at most {report['max_connected']} connected; at the end {end['connected']} "
            f"connected, {end['closed']} closed"
        )
        if report.get("errors"):
            text += f", {report['errors']} errors"
        return text


@dataclass
class HeldConnection:
    """What one holder connection saw, in seconds from its payload's sending."""

    status: str | None = None  # the status code of the first answer, if one came
    answered: float | None = None
    closed: float | None = None
    how: str = "held until the end"  # or "closed", "reset", "connect failed: <error>"


@dataclass(frozen=True)
class Holder:
    """`connections` raw connections that each send `payload` once and then only read,
    until the server closes or `seconds` have passed; the holder then closes its side."""

    payload: bytes
    connections: int
    seconds: int

    def describe(self) -> str:
        what = repr(self.payload)[2:-1] if self.payload else "nothing"
        return (
            f"{self.connections} connections at once, each sends {what} and holds the "
            f"connection (reading only) for at most {self.seconds} s"
        )

    async def run(self, port: int, workdir: Path) -> dict:
        held = await asyncio.gather(*(self._one(port) for _ in range(self.connections)))
        return self.report(list(held))

    async def _one(self, port: int) -> HeldConnection:
        seen = HeldConnection()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError) as exc:
            seen.how = f"connect failed: {type(exc).__name__}"
            return seen
        began = time.monotonic()
        try:
            writer.write(self.payload)
            while True:
                data = await asyncio.wait_for(
                    reader.read(65536), self.seconds - (time.monotonic() - began)
                )
                now = time.monotonic() - began
                if not data:
                    seen.closed, seen.how = now, "closed"
                    break
                if seen.answered is None:
                    seen.answered = now
                    first = data.split(b"\r\n", 1)[0].split(b" ")
                    seen.status = first[1].decode() if first[0].startswith(b"HTTP/") else "?"
        except TimeoutError:
            pass  # held until the end: the holder gives up and closes
        except OSError:
            seen.closed, seen.how = time.monotonic() - began, "reset"
        finally:
            writer.close()
        return seen

    def report(self, held: list[HeldConnection]) -> dict:
        groups: dict[tuple[str | None, str], list[HeldConnection]] = {}
        for seen in held:
            groups.setdefault((seen.status, seen.how), []).append(seen)
        return {
            "groups": [
                {
                    "count": len(members),
                    "status": status,
                    "how": how,
                    "answered_s": _spread([m.answered for m in members]),
                    "closed_s": _spread([m.closed for m in members]),
                }
                for (status, how), members in sorted(groups.items(), key=lambda g: -len(g[1]))
            ]
        }

    @staticmethod
    def saw(report: dict) -> str:
        """Returns what the holders saw, in one line of the table ("200: 400 after 0.00 s,
        closed after 0.00 s")."""
        parts = []
        for g in report["groups"]:
            text = f"{g['count']}: "
            text += f"{g['status']} after {_when(g['answered_s'])}" if g["status"] else "no answer"
            if g["how"] == "closed":
                text += f", closed after {_when(g['closed_s'])}"
            elif g["how"] == "reset":
                text += f", reset after {_when(g['closed_s'])}"
            else:
                text += f", {g['how']}"
            parts.append(text)
        return "; ".join(parts)


def _spread(values: list[float | None]) -> dict | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {
        "min": round(min(known), 2),
        "median": round(statistics.median(known), 2),
        "max": round(max(known), 2),
    }


def _when(spread: dict | None) -> str:
    if spread is None:
        return "?"
    if spread["max"] - spread["min"] < 0.5:
        return f"{spread['median']:.1f} s"
    return f"{spread['min']:.1f}-{spread['max']:.1f} s"
