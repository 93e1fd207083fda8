"""`make attack`: slow and malformed clients against ringlb and HAProxy, over the same
three replica processes, while a probe client measures what is left of the service.

For each attack a fresh `ringlb serve` starts three test replicas (tests/echo_replica.py,
which also takes POST bodies and serves a 64 MiB answer) and HAProxy 2.6 (`nbthread 1`,
bench/targets.py's configuration plus a 10 s header timeout and a stats socket) is put in
front of those same processes. The attack runs against HAProxy, then against ringlb (so a
replica ringlb replaces cannot leave HAProxy pointing at a dead port). During each run the
probe sends `GET /home` every 0.2 s on a new connection with a 2 s deadline, a second
probe does the same straight to one replica (what the replicas answer under the attack),
and a third to an idle process that answers at once (what the host itself leaves of a
loopback answer under the attack's load); the balancer's resident memory is read from
/proc; `--settle` seconds after the attack ends its final memory and the client
connections it still holds are read. Writes bench/results/attack-*.json and, for a full
run, the table of docs/reliability.md.

    python bench/attack.py                      # every attack, ~12 minutes
    python bench/attack.py --only idle,bad-chunk --seconds 15
    python bench/attack.py --report bench/results/attack-latest.json --write-doc
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import http.client
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import procstat
import targets
from attackers import FloorServer, Holder, Probe, Slowhttptest

import ringlb as ringlb_package

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "reliability.md"
START = "<!-- attack-table:start (bench/attack.py writes this part) -->"
END = "<!-- attack-table:end -->"

ECHO_REPLICA = HERE.parent / "tests" / "echo_replica.py"
# tests/echo_replica.py as ringlb's `--replica-command`. The word `replica` on its command
# line is what runtimes.process.find_replica_processes looks for (it knows `ringlb replica`
# command lines), so the shim takes it out before running the script unchanged.
REPLICA_SHIM = (
    "import runpy, sys; sys.argv[:3] = sys.argv[1:2]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
REPLICA_COMMAND = (
    f"{{python}} -c {shlex.quote(REPLICA_SHIM)} {shlex.quote(str(ECHO_REPLICA))} replica "
    "--id {name} --host {host} --port {port}"
)

BAD_CHUNK = b"POST /echo HTTP/1.1\r\nHost: attack\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nABCDE0"
SLOW_SECONDS = 45

# name: (what the table calls it, the attack with its default length)
ATTACKS: dict[str, tuple[str, Slowhttptest | Holder]] = {
    "slowloris": (
        "slowloris headers, 4,000 connections",
        Slowhttptest("-H -c 4000 -r 400 -i 10 -x 24 -t GET -p 2", "/home", SLOW_SECONDS),
    ),
    "slow-post": (
        "slow POST bodies of 1 MiB, 2,000 connections",
        Slowhttptest(
            "-B -c 2000 -r 400 -i 10 -s 1048576 -x 10 -t POST -p 2", "/echo", SLOW_SECONDS
        ),
    ),
    "slow-read": (
        "slow read of a 64 MiB answer, 1,000 connections",
        Slowhttptest(
            "-X -c 1000 -r 200 -w 512 -y 1024 -n 5 -z 32 -p 2", "/bytes/67108864", SLOW_SECONDS
        ),
    ),
    "slow-read-200": (
        "slow read of a 64 MiB answer, 200 connections",
        Slowhttptest(
            "-X -c 200 -r 200 -w 512 -y 1024 -n 5 -z 32 -p 2", "/bytes/67108864", SLOW_SECONDS
        ),
    ),
    "bad-chunk": (
        "200 connections sending a malformed chunked POST and holding",
        Holder(BAD_CHUNK, 200, SLOW_SECONDS),
    ),
    "idle": (
        "200 connections that send nothing",
        Holder(b"", 200, 70),  # longer than ringlb's 60 s idle timeout
    ),
}

# What HAProxy gets beyond bench/targets.py's configuration: a header deadline like ringlb's
# client_header_timeout (10 s; without it HAProxy's `timeout client`, 30 s, applies), and a
# stats socket to read its health checks' UP -> DOWN transitions from. `haproxy` has no cap
# on its connections to each replica (HAProxy's default, so a slow client holds a server
# connection of its own); `haproxy-cap64` (not run unless asked) has bench/targets.py's
# `maxconn 64` per replica, ringlb's upstream_pool_size.
HAPROXY_DEFAULTS = ["timeout http-request 10s"]
HAPROXY_SERVER_MAXCONN = {"haproxy": None, "haproxy-cap64": targets.UPSTREAM_CAP}
BALANCERS = ("haproxy", "haproxy-cap64", "ringlb")


def start_haproxy(
    name: str, workdir: Path, replicas: list[targets.ReplicaEndpoint]
) -> targets.Haproxy:
    """Starts the HAProxy variant `name` in front of `replicas`, with its files in `workdir`."""
    workdir.mkdir()
    stats = [f"stats socket {workdir / 'haproxy.sock'} mode 600 level user"]
    haproxy = targets.Haproxy(
        workdir, replicas, stats, HAPROXY_DEFAULTS, HAPROXY_SERVER_MAXCONN[name]
    )
    haproxy.name = name
    haproxy.workdir = workdir
    return haproxy


# Counters of ringlb's /metrics read before and after each run.
RINGLB_COUNTERS = (
    "ringlb_ejections_total",
    "ringlb_replica_deaths_total",
    "ringlb_respawns_total",
    "ringlb_retries_total",
)


def http_get(port: int, path: str, timeout: float = 5.0) -> bytes | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    except OSError:
        return None
    finally:
        conn.close()


def ringlb_state(port: int) -> dict:
    """Returns ringlb's replica list (/rep) and its failure counters (/metrics)."""
    rep = http_get(port, "/rep")
    metrics = (http_get(port, "/metrics") or b"").decode()
    counters = {}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        if name in RINGLB_COUNTERS:
            counters[name] = float(value)
    return {
        "replicas": json.loads(rep)["message"]["replicas"] if rep else None,
        "counters": counters,
    }


def haproxy_state(workdir: Path) -> dict:
    """Returns each server's status and UP -> DOWN transitions (`chkdown`) from HAProxy's
    stats socket (`show stat`)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(workdir / "haproxy.sock"))
        sock.sendall(b"show stat\n")
        text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    lines = text.lstrip("# ").splitlines()
    header = lines[0].split(",")
    servers = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "replicas" and row.get("svname") not in ("BACKEND", None):
            servers[row["svname"]] = {"status": row["status"], "chkdown": int(row["chkdown"])}
    return {"servers": servers}


def ejected(target: str, before: dict, after: dict) -> int | None:
    """Returns how many times a replica was taken out of service between the two states."""
    if target == "ringlb":
        key = "ringlb_ejections_total"
        if key not in before["counters"] or key not in after["counters"]:
            return None
        return int(after["counters"][key] - before["counters"][key])
    return sum(
        s["chkdown"] - before["servers"].get(name, {}).get("chkdown", 0)
        for name, s in after["servers"].items()
    )


class MemorySampler:
    """Samples the resident memory of `pids` every `interval` seconds until stopped."""

    def __init__(self, pids: list[int], interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        # The host's TCP socket memory (every process's socket buffers): under the kernel's
        # tcp_mem pressure, writes fail though the sockets poll writable.
        self.tcp_samples: list[tuple[float, int]] = []

    async def run(self, stop: asyncio.Event) -> None:
        began = time.monotonic()
        while not stop.is_set():
            rss = procstat.total_memory_kib(self.pids)["VmRSS"]
            at = round(time.monotonic() - began, 1)
            self.samples.append((at, rss))
            self.tcp_samples.append((at, procstat.tcp_memory_kib()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


def log_lines(path: Path, offset: int) -> list[dict]:
    """Returns the JSON log records written to `path` past `offset`."""
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    records = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def log_summary(records: list[dict]) -> list[dict]:
    """Returns the log messages counted by shape (names and numbers replaced by #)."""
    shapes: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for record in records:
        msg = record.get("msg", "")
        shape = f"{record.get('level', '?')}: " + re.sub(r"server_\w+|\d+(\.\d+)?", "#", msg)
        shapes[shape] += 1
        samples.setdefault(shape, msg)
    return [
        {"count": n, "shape": shape, "first": samples[shape]} for shape, n in shapes.most_common()
    ]


async def run_one(
    target: targets.Target,
    attack: Slowhttptest | Holder,
    workdir: Path,
    settle: float,
    replica: targets.ReplicaEndpoint,
) -> dict:
    """Runs one attack against one balancer; returns the row's figures. Beside the probe
    through the balancer, one probe goes straight to `replica` (what the replicas answer
    under the attack) and one to an idle server (what the host answers)."""
    pid = target.pids()[0]
    is_ringlb = target.name == "ringlb"
    if is_ringlb:
        state = functools.partial(ringlb_state, target.port)
    else:
        state = functools.partial(haproxy_state, target.workdir)
    log = getattr(target.proc, "log_path", None)
    log_offset = log.stat().st_size if log else 0
    row: dict = {"load_average_at_start": os.getloadavg()}
    # The start-up check's connection (and, below, the state requests') is still closing
    # for a moment: let it go before counting the connections the balancer holds.
    await asyncio.sleep(1)
    connections_before = procstat.tcp_connections(pid, target.port)
    before = state()
    rss_start = procstat.memory_kib(pid)["VmRSS"]
    cpu_start = procstat.cpu_seconds(pid), procstat.total_cpu_seconds([replica.pid])

    stop_probe, stop_sampler = asyncio.Event(), asyncio.Event()
    probe, sampler = Probe(target.port), MemorySampler([pid])
    floor_server = FloorServer(lifetime=attack.seconds + settle + 60)
    try:
        floor, direct = Probe(floor_server.port), Probe(replica.port)
        probing = asyncio.gather(*(p.run(stop_probe) for p in (probe, floor, direct)))
        sampling = asyncio.create_task(sampler.run(stop_sampler))
        began = time.monotonic()
        saw = await attack.run(target.port, workdir)
        row["attack_seconds"] = round(time.monotonic() - began, 1)
        # The probe watches for the attack's whole length, even when the balancer has
        # dropped every hostile connection early.
        await asyncio.sleep(max(0.0, attack.seconds - (time.monotonic() - began)))
        ended = time.monotonic()
        cpu_end = procstat.cpu_seconds(pid), procstat.total_cpu_seconds([replica.pid])
        stop_probe.set()
        await probing
    finally:
        floor_server.stop()  # also when the attack failed: nothing of ours outlives a row
    await asyncio.sleep(max(0.0, settle - (time.monotonic() - ended)))
    stop_sampler.set()
    await sampling

    memory = procstat.memory_kib(pid)
    connections_at_end = procstat.tcp_connections(pid, target.port)
    after = state()
    row.update(
        probe=probe.summary(),
        floor_probe=floor.summary(),
        replica_probe=direct.summary(),
        # CPU seconds over the attack: the balancer's, and the probed replica's (it serves
        # a third of the attack's requests).
        cpu_s={
            "balancer": round(cpu_end[0] - cpu_start[0], 2),
            "replica": round(cpu_end[1] - cpu_start[1], 2),
        },
        ejected=ejected(target.name, before, after),
        state_before=before,
        state_after=after,
        rss_mib={
            "start": round(rss_start / 1024, 1),
            "peak": round(memory["VmHWM"] / 1024, 1),
            "final": round(memory["VmRSS"] / 1024, 1),
        },
        rss_samples_kib=sampler.samples,
        tcp_memory_peak_mib=round(max((kib for _, kib in sampler.tcp_samples), default=0) / 1024),
        tcp_memory_samples_kib=sampler.tcp_samples,
        client_connections_before=connections_before,
        client_connections_at_end=connections_at_end,
        attackers=saw,
        attackers_saw=attack.saw(saw),
    )
    if log:
        row["log"] = log_summary(log_lines(log, log_offset))
    return row


async def run_attack(name: str, attack: Slowhttptest | Holder, workdir: Path, args) -> dict:
    """Runs `attack` against each HAProxy variant asked for, then ringlb, over the replicas
    of a fresh `ringlb serve`; each HAProxy runs only for its own row."""
    workdir.mkdir()
    extra = ["--replica-command", REPLICA_COMMAND, "--log-format", "json"]
    ringlb = targets.Ringlb(workdir, extra_args=extra)
    rows = {}
    try:
        replicas = ringlb.replicas
        for balancer in args.balancers:
            print(f"attack: {name} against {balancer} ({attack.seconds} s)", flush=True)
            if balancer == "ringlb":
                target = ringlb
            else:
                target = start_haproxy(balancer, workdir / balancer, replicas)
            try:
                rows[balancer] = row = await run_one(
                    target, attack, workdir, args.settle, replicas[0]
                )
            finally:
                if target is not ringlb:
                    target.stop()
            row["replica_rss_mib"] = {
                r.name: round(procstat.memory_kib(r.pid)["VmRSS"] / 1024, 1)
                for r in replicas
                if Path(f"/proc/{r.pid}").exists()
            }
            print(f"attack: {name} {balancer}: {json.dumps(brief(row))}", flush=True)
    finally:
        ringlb.stop()
    return rows


def brief(row: dict) -> dict:
    """Returns the figures of a row that the table shows."""
    return {
        "probe": {
            k: row["probe"][k] for k in ("ok_percent", "worst_latency_s", "longest_outage_s")
        },
        "replica_worst_latency_s": row["replica_probe"]["worst_latency_s"],
        "cpu_s": row["cpu_s"],
        "tcp_memory_peak_mib": row["tcp_memory_peak_mib"],
        "floor_worst_latency_s": row["floor_probe"]["worst_latency_s"],
        "ejected": row["ejected"],
        "rss_mib": row["rss_mib"],
        "held": row["client_connections_at_end"],
        "saw": row["attackers_saw"],
    }


def versions() -> dict[str, str]:
    slow = subprocess.run(["slowhttptest", "-h"], capture_output=True, text=True, check=False)
    found = re.search(r"version ([\d.]+)", slow.stdout + slow.stderr)
    return {
        "haproxy": targets.version("haproxy"),
        "slowhttptest": found.group(1) if found else "unknown",
        # `ringlb serve` runs from this same environment: a source edited after the build
        # runs as plain Python, and the figures are then the pure build's.
        "ringlb_hot_path": ringlb_package.BUILD,
    }


def render(report: dict) -> str:
    """Returns the Markdown of a report: how it was measured, then the table."""
    m = report["machine"]
    lines = [
        f"Measured by `make attack` on {report['started'][:10]} ({m['cpus']} cores, "
        f"{m['cpu_model']}, Python {m['python']}, {report['versions']['haproxy'].split(' - ')[0]},"
        f" slowhttptest {report['versions']['slowhttptest']}; ringlb's hot path "
        f"{report['versions'].get('ringlb_hot_path', 'not recorded')}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in report['load_average_at_start'])}; the whole run "
        f"took {report['seconds'] / 60:.1f} minutes).",
        "",
        "| attack | balancer | probes answered 200 in time | worst probe | longest outage "
        "| worst probe straight to a replica | worst probe of an idle server beside it "
        "| replicas ejected | RSS MiB: start, peak, final | client connections held at the end "
        "| what the attack's clients saw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, rows in report["rows"].items():
        label = report["attacks"][name]["label"]
        for balancer, row in rows.items():
            p, rss = row["probe"], row["rss_mib"]
            states = row["client_connections_at_end"]
            held = str(sum(states.values()))
            if states:
                held += f" ({', '.join(f'{n} {state}' for state, n in states.items())})"
            ejected = "?" if row["ejected"] is None else str(row["ejected"])
            worst = f"{p['worst_latency_s']:.2f} s"
            if "timeout" in p["failures"]:
                worst = f"{worst} (timeout)"
            # Reports before 2026-12-04 21:30 UTC have neither.
            direct, floor = row.get("replica_probe"), row.get("floor_probe")
            direct_worst = f"{direct['worst_latency_s']:.2f} s" if direct else "not measured"
            floor_worst = f"{floor['worst_latency_s']:.2f} s" if floor else "not measured"
            lines.append(
                f"| {label} | {balancer} | {p['ok_percent']:.1f} % ({p['ok']}/{p['sent']}) "
                f"| {worst} | {p['longest_outage_s']:.1f} s | {direct_worst} | {floor_worst} "
                f"| {ejected} "
                f"| {rss['start']:.0f}, {rss['peak']:.0f}, {rss['final']:.0f} | {held} "
                f"| {row['attackers_saw']} |"
            )
    lines += ["", "The attacks, exactly (PORT is the balancer's):", ""]
    lines += ["| attack | parameters |", "|---|---|"]
    for attack in report["attacks"].values():
        lines.append(f"| {attack['label']} | `{attack['parameters']}` |")
    return "\n".join(lines)


def write_doc(report: dict, doc: Path = DOC) -> None:
    text = doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{doc}: markers not found ({START} ... {END})")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{render(report)}\n{END}{tail}")
    print(f"attack: table written into {doc}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ATTACKS)}")
    parser.add_argument(
        "--balancers",
        default="haproxy,ringlb",
        help=f"comma-separated subset of {','.join(BALANCERS)} (run in that order)",
    )
    parser.add_argument("--seconds", type=int, help="length of every attack (default: its own)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the attack")
    parser.add_argument("--report", metavar="JSON", help="render a saved run instead")
    parser.add_argument(
        "--write-doc",
        action="store_true",
        help="write docs/reliability.md even for a partial run (default: full runs only)",
    )
    args = parser.parse_args()
    args.balancers = [b for b in BALANCERS if b in args.balancers.split(",")]
    args.only = [a for a in args.only.split(",") if a]
    unknown = set(args.only) - set(ATTACKS)
    if unknown:
        parser.error(f"--only: unknown attack(s) {', '.join(sorted(unknown))}")
    return args


async def main_async(args: argparse.Namespace) -> dict:
    chosen = {n: a for n, a in ATTACKS.items() if not args.only or n in args.only}
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-attack-"))
    print(f"attack: work files in {workdir}", flush=True)
    print(f"attack: ringlb's hot path: {ringlb_package.BUILD}", flush=True)
    started = time.time()
    report: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": targets.machine(),
        "load_average_at_start": os.getloadavg(),
        "versions": versions(),
        "probe": "GET /home every 0.2 s, a new connection each, 2 s deadline",
        "settle_s": args.settle,
        "order": "HAProxy first, then ringlb, on fresh balancers and replicas per attack",
        "attacks": {},
        "rows": {},
    }
    for name, (label, attack) in chosen.items():
        if args.seconds:
            attack = dataclasses.replace(attack, seconds=args.seconds)
        report["attacks"][name] = {"label": label, "parameters": attack.describe()}
        report["rows"][name] = await run_attack(name, attack, workdir / name, args)
    report["seconds"] = round(time.time() - started)
    return report


def main() -> int:
    args = parse_args()
    if args.report:
        report = json.loads(Path(args.report).read_text())
    else:
        if shutil.which("slowhttptest") is None:  # (HAProxy's absence is told by targets)
            print(
                "attack: slowhttptest is not installed; `make attack` installs it "
                "(or `bash bench/install.sh haproxy slowhttptest`)",
                file=sys.stderr,
            )
            return 2
        # slowhttptest (a child) and the holders need a descriptor per connection.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        report = asyncio.run(main_async(args))
        RESULTS.mkdir(exist_ok=True)
        stamp = report["started"].replace("-", "").replace(":", "")[:15]
        for path in (RESULTS / f"attack-{stamp}.json", RESULTS / "attack-latest.json"):
            path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"attack: wrote {RESULTS / f'attack-{stamp}.json'}")
    print(render(report))
    full = not args.only and not args.seconds and set(args.balancers) >= {"ringlb", "haproxy"}
    if args.write_doc or (full and not args.report):
        write_doc(report)
    else:
        print("attack: docs/reliability.md left alone (a partial run; --write-doc to write it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
