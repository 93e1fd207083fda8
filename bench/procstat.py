"""What the kernel says a process used: CPU time and memory, read from /proc (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Returns utime + stime of `pid` (all its threads, not its children) in seconds."""
    # Fields after the command name (which may hold spaces): state is [0], utime [11], stime [12].
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """Returns VmRSS (resident now) and VmHWM (peak resident) of `pid` in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def children(pid: int) -> list[int]:
    """Returns the pids whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def total_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def total_memory_kib(pids: list[int]) -> dict[str, int]:
    """Returns VmRSS and VmHWM summed over `pids` (a master and its workers count together)."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for pid in pids:
        for name, value in memory_kib(pid).items():
            total[name] += value
    return total
