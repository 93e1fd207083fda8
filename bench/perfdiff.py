"""Where ringlb's CPU per request goes, beside the featureless proxy's: `perf` per symbol.

Starts ringlb (with its three replicas) and bench/floor_proxy.py in front of the same
replicas, drives each with wrk, samples each process with `perf record` for a few seconds,
and prints, per symbol, the CPU microseconds per request of both and their difference:
how much of ringlb's extra cost is the interpreter, regular expressions, allocation, the
kernel. Needs `perf` (Debian package linux-perf); an investigation tool, not a test.

    .venv/bin/python bench/perfdiff.py [--seconds 5] [--top 30]
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import targets
from wrk import WrkSettings, run_wrk

FREQUENCY = 2000  # samples per second of CPU: one sample is 500 µs
_LINE = re.compile(r"\s+(\d+)\s+(\S+)\s+\[.\]\s+(.*)")


def profile(port: int, pid: int, seconds: int, out: Path) -> tuple[collections.Counter, float]:
    """Returns the samples per (object, symbol) of `pid` under wrk, and the requests served
    while sampling."""
    run_wrk(port, WrkSettings(seconds=2))  # warm-up
    result = {}
    load = threading.Thread(
        target=lambda: result.update(wrk=run_wrk(port, WrkSettings(seconds=seconds + 4)))
    )
    load.start()
    time.sleep(2)
    record = ["perf", "record", "-F", str(FREQUENCY), "-o", str(out), "-p", str(pid)]
    subprocess.run([*record, "--", "sleep", str(seconds)], capture_output=True, check=True)
    load.join()
    report = ["perf", "report", "-i", str(out), "--no-children", "--sort", "dso,sym"]
    report += ["-g", "none", "-F", "sample,dso,sym", "--stdio"]
    text = subprocess.run(report, capture_output=True, text=True, check=True).stdout
    samples: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            samples[(match[2], match[3].strip())] += int(match[1])
    return samples, result["wrk"].rps * seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-perfdiff-"))
    ringlb = targets.Ringlb(workdir)
    floor = None
    try:
        floor = targets.PythonFloor(workdir, ringlb.replicas)
        per_request = {}
        for target in (ringlb, floor):
            samples, requests = profile(
                target.port, target.pids()[0], args.seconds, workdir / f"{target.name}.data"
            )
            scale = 1e6 / FREQUENCY / requests
            per_request[target.name] = {key: n * scale for key, n in samples.items()}
            total = sum(per_request[target.name].values())
            print(f"{target.name}: {requests / args.seconds:.0f} req/s, {total:.1f} µs/request")
    finally:
        if floor is not None:
            floor.stop()
        ringlb.stop()
    mine, theirs = per_request["ringlb"], per_request["py-floor"]
    keys = sorted(set(mine) | set(theirs), key=lambda k: theirs.get(k, 0) - mine.get(k, 0))
    print(f"{'ringlb':>7} {'floor':>7} {'diff':>7}  µs per request, by object and symbol")
    for key in keys[: args.top]:
        a, b = mine.get(key, 0.0), theirs.get(key, 0.0)
        print(f"{a:7.2f} {b:7.2f} {a - b:7.2f}  {key[0][:24]} {key[1][:60]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
