"""Runs wrk against one port and returns its figures as numbers."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkSettings:
    connections: int = 64
    threads: int = 2
    seconds: int = 10
    path: str = "/home"
    scheme: str = "http"  # https: the TLS listener
    new_connections: bool = False  # Connection: close on every request (a handshake each)


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors (connect/read/write/timeout) plus non-2xx/3xx answers
    output: str


def run_wrk(port: int, settings: WrkSettings, seconds: int | None = None) -> WrkResult:
    """Runs `wrk --latency` for `seconds` (default: the settings') and parses its report."""
    duration = seconds or settings.seconds
    args = ["wrk", "--latency", f"-t{settings.threads}", f"-c{settings.connections}"]
    if settings.new_connections:
        args += ["-H", "Connection: close"]
    url = f"{settings.scheme}://127.0.0.1:{port}{settings.path}"
    args += [f"-d{duration}s", "--timeout", "5s", url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30, check=True)
    return parse(out.stdout)


def parse(text: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if done is None:
        raise ValueError(f"cannot read wrk output:\n{text}")
    seconds = float(done.group(2)) * _UNITS[done.group(3)] / 1000
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(
        requests=int(done.group(1)),
        seconds=seconds,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        p50_ms=_percentile(text, "50"),
        p99_ms=_percentile(text, "99"),
        errors=errors,
        output=text,
    )


def _percentile(text: str, which: str) -> float:
    found = re.search(rf"^\s+{which}%\s+([\d.]+)(\w+)", text, re.MULTILINE)
    if found is None:
        raise ValueError(f"no {which}th percentile in wrk output:\n{text}")
    return float(found.group(1)) * _UNITS[found.group(2)]
