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


# The kernel's TCP states (include/net/tcp_states.h), as /proc/net/tcp writes them in hex.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}


def tcp_connections(pid: int, local_port: int) -> dict[str, int]:
    """Returns the TCP sockets `pid` holds open on `local_port` (the connections its clients
    made to that listening port), counted by state; the listening socket is left out."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    counts: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT, st the state in hex, inode the tenth field.
            port = int(fields[1].rsplit(":", 1)[1], 16)
            state = TCP_STATES.get(int(fields[3], 16), fields[3])
            if port == local_port and state != "LISTEN" and fields[9] in inodes:
                counts[state] = counts.get(state, 0) + 1
    return counts


def tcp_memory_kib() -> int:
    """Returns the memory this network namespace's TCP sockets hold now (all processes:
    every socket buffer, the kernel's `tcp_mem` accounting), in KiB."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    return 0
