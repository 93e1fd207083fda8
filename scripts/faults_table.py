#!/usr/bin/env python3
"""Renders the figures of the fault-injection suite into docs/reliability.md.

Usage: scripts/faults_table.py FIGURES.jsonl [DOC.md]

FIGURES.jsonl holds one JSON object per fault test (tests/faults/faultlib.py `Figures`,
written when RINGLB_FAULTS_REPORT names the file). The table replaces whatever is between
the two marker lines of DOC.md (default docs/reliability.md); the rest is left alone. Rows
of faults that did not run this time (the opt-in ones) are kept from the previous table,
marked as earlier figures, so a default run does not erase them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

START = "<!-- faults-table:start (scripts/faults_table.py writes this part) -->"
END = "<!-- faults-table:end -->"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


EARLIER = " (figures of an earlier run: this fault's test did not run this time)"


def earlier_rows(table: str, rows: list[dict]) -> list[str]:
    """Returns the lines of `table` for faults (name and runtime) not among `rows`."""
    measured = {(row["fault"], row["runtime"]) for row in rows}
    kept = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 7 or cells[0] in ("fault", "---"):
            continue
        if (cells[0], cells[1]) not in measured:
            kept.append(line if line.endswith(EARLIER + " |") else line[:-2] + EARLIER + " |")
    return kept


def render(rows: list[dict], kept: list[str]) -> str:
    """Returns the markdown table of `rows`, one line per fault, in the order they ran,
    then the `kept` lines of faults that did not run."""
    lines = [
        f"Measured by `make faults` on {time.strftime('%Y-%m-%d')} "
        f"({platform.system()}, {os.cpu_count()} cores, Python {platform.python_version()}).",
        "",
        "| fault | runtime | requests | client errors | detection | recovery | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        note = row.get("note", "").replace("|", "\\|")
        figures = [
            str(row["requests"]),
            str(row["client_errors"]),
            seconds(row.get("detection_s")),
            seconds(row.get("recovery_s")),
        ]
        lines.append(f"| {row['fault']} | {row['runtime']} | {' | '.join(figures)} | {note} |")
    return "\n".join(lines + kept)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    figures = Path(argv[1])
    doc = Path(argv[2] if len(argv) == 3 else "docs/reliability.md")
    if not figures.exists():
        print(f"{figures}: no figures (did any fault test run?)", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in figures.read_text().splitlines() if line.strip()]
    text = doc.read_text()
    if START not in text or END not in text:
        print(f"{doc}: markers not found ({START} ... {END})", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    previous, tail = rest.split(END, 1)
    kept = earlier_rows(previous, rows)
    doc.write_text(f"{head}{START}\n{render(rows, kept)}\n{END}{tail}")
    print(f"{doc}: {len(rows)} fault(s) written, {len(kept)} kept from the previous table")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
