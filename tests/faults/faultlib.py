"""Fault-injection helpers: a bounded client load, a clock for detection and recovery, and
the figures each fault test prints and (with RINGLB_FAULTS_REPORT set) appends as one JSON
line to that file, which scripts/faults_table.py renders into docs/reliability.md."""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lbtest import BalancerProcess, request
from ringlb.replica.lifeline import PARENT_PID_ENV

REPORT_ENV = "RINGLB_FAULTS_REPORT"
FAULTY_REPLICA = Path(__file__).resolve().parents[1] / "faulty_replica.py"


def faulty_command(faults: dict[str, str] | None = None) -> str:
    """Returns a `--replica-command` running tests/faulty_replica.py; a replica whose name
    starts with a key of `faults` starts in that fault mode (e.g. {"mute": "mute"})."""
    cases = "".join(
        f"{prefix}*) f={shlex.quote(mode)};; " for prefix, mode in (faults or {}).items()
    )
    script = (
        f'case "$0" in {cases}*) f=none;; esac; '
        f'exec "$1" {shlex.quote(str(FAULTY_REPLICA))} '
        '--id "$0" --host "$2" --port "$3" --fault "$f"'
    )
    return f"sh -c {shlex.quote(script)} {{name}} {{python}} {{host}} {{port}}"


@dataclass
class Figures:
    """What one fault did to clients, and how long the balancer took to notice and repair."""

    fault: str
    runtime: str = "process"
    requests: int = 0
    client_errors: int = 0
    detection_s: float | None = None
    recovery_s: float | None = None
    note: str = ""

    def record(self) -> None:
        """Prints the figures and appends them to $RINGLB_FAULTS_REPORT when set."""

        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} s"

        print(
            f"\n[fault] {self.fault} ({self.runtime}): {self.requests} requests, "
            f"{self.client_errors} client errors, detection {seconds(self.detection_s)}, "
            f"recovery {seconds(self.recovery_s)}. {self.note}"
        )
        target = os.environ.get(REPORT_ENV)
        if target:
            with open(target, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(self)) + "\n")


def faulty_replicas(balancer: BalancerProcess) -> dict[str, tuple[int, int]]:
    """Returns {name: (pid, port)} of the live faulty_replica.py processes of that balancer
    (runtimes.process.find_replica_processes knows only `ringlb replica` command lines)."""
    mark = f"{PARENT_PID_ENV}={balancer.pid}\x00".encode()
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().decode().split("\x00")
            if not any(a.endswith(FAULTY_REPLICA.name) for a in args) or "--id" not in args:
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if mark not in (proc / "environ").read_bytes():
                continue
        except OSError:
            continue
        found[args[args.index("--id") + 1]] = (int(proc.name), int(args[args.index("--port") + 1]))
    return found


def inject(balancer: BalancerProcess, name: str, mode: str) -> None:
    """Switches the faulty replica `name` to `mode`, straight on its own port."""
    reply = request(faulty_replicas(balancer)[name][1], "GET", f"/_fault/{mode}", timeout=5)
    assert reply.status == 200, reply


def out_of_rep(balancer: BalancerProcess, victim: str) -> bool:
    return victim not in balancer.replicas()


def repaired(balancer: BalancerProcess, victim: str, count: int) -> list[str] | None:
    """Returns /rep's names once `victim` is gone and `count` replicas serve again."""
    names = balancer.replicas()
    return names if victim not in names and len(names) == count else None


def since(start: float) -> float:
    return time.monotonic() - start
