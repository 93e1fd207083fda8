"""Where ringlb spends its CPU under the benchmark load: py-spy samples the balancer process
while wrk drives it, then prints the hottest functions (self time and inclusive time).

Needs py-spy (`.venv/bin/pip install py-spy`; an investigation tool, not a dependency):

    .venv/bin/python bench/hotspots.py --seconds 15 [--native] [--policy assignment]

Sampling is wall-clock: on a busy machine time spent waiting for a CPU lands on whatever
line was running (often a socket write), so compare with utime/stime from /proc before
trusting proportions.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import targets
from wrk import WrkSettings, run_wrk


def summarize(collapsed: Path, top: int) -> str:
    """Returns the `top` frames by self samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--native", action="store_true", help="unwind into C extensions")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--policy", default="round_robin", help="ringlb's policy")
    parser.add_argument("--out", type=Path, default=None, help="keep the collapsed stacks here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("hotspots: py-spy is not installed (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="ringlb-profile-"))
    collapsed = args.out or workdir / "ringlb.collapsed"
    ringlb = targets.Ringlb(workdir, args.policy)
    try:
        settings = WrkSettings(seconds=args.seconds + 4)
        run_wrk(ringlb.port, settings, seconds=2)
        load = threading.Thread(target=run_wrk, args=(ringlb.port, settings))
        load.start()
        record = [py_spy, "record", "--format", "raw", "--rate", str(args.rate)]
        record += ["--duration", str(args.seconds), "--pid", str(ringlb.proc.pid)]
        record += ["--output", str(collapsed)]
        # Native unwinding needs the process paused per sample; Python-only sampling does not.
        record.append("--native" if args.native else "--nonblocking")
        spy = subprocess.run(record, capture_output=True, text=True, timeout=args.seconds + 60)
        load.join()
        if spy.returncode != 0:
            print(f"hotspots: py-spy failed:\n{spy.stderr[-3000:]}", file=sys.stderr)
            return 1
    finally:
        ringlb.stop()
    print(summarize(collapsed, args.top))
    print(f"\nhotspots: collapsed stacks in {collapsed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
