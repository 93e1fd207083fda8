"""How long a membership change takes to reach every worker of `--workers N` under load:
from the control process's push to the worker routing on it (`reach`: leavers out at
once) and to its complete table (`propagation`: joiners in), as each worker reports them in
`/status` (`workers[].reach_ms`, `workers[].propagation_ms`).

Starts `ringlb serve --workers N` (maglev, three replicas), runs wrk against it, and adds
then removes one replica `--changes` times. Prints one JSON object.

    .venv/bin/python bench/propagation.py [--workers 2] [--changes 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import targets


def call(port: int, method: str, path: str, payload: object | None = None) -> dict:
    body = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, method=method)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="2")
    parser.add_argument("--changes", type=int, default=4, help="add+remove pairs")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-propagation-"))
    ringlb = targets.Ringlb(workdir, "maglev", workers=args.workers, name="ringlb-workers")
    samples: list[float] = []
    reaches: list[float] = []
    answers: list[float] = []
    try:
        seconds = 4 + 3 * args.changes
        wrk = subprocess.Popen(
            [
                "wrk",
                f"-t{args.threads}",
                "-c64",
                f"-d{seconds}s",
                "-s",
                str(Path(__file__).with_name("random_key.lua")),
                f"http://127.0.0.1:{ringlb.port}/home",
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(2)
        for _ in range(args.changes):
            for method, path in (("POST", "/add"), ("DELETE", "/rm")):
                began = time.perf_counter()
                call(ringlb.port, method, path, {"n": 1, "hostnames": ["propagation_probe"]})
                answers.append(time.perf_counter() - began)
                workers = call(ringlb.port, "GET", "/status")["message"]["workers"]
                samples += [w["propagation_ms"] for w in workers if w["propagation_ms"]]
                reaches += [w["reach_ms"] for w in workers if w["reach_ms"] is not None]
                time.sleep(1)
        wrk.wait(seconds + 30)
    finally:
        ringlb.stop()
    print(
        json.dumps(
            {
                "workers": args.workers,
                "changes": 2 * args.changes,
                "wrk_threads": args.threads,
                "reach_ms_median": round(statistics.median(reaches), 2),
                "reach_ms_max": round(max(reaches), 2),
                "propagation_ms_median": round(statistics.median(samples), 1),
                "propagation_ms_max": round(max(samples), 1),
                "admin_answer_ms_median": round(statistics.median(answers) * 1e3, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
