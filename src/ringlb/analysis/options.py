"""The options of `ringlb analyze`, kept apart so that `ringlb --help` stays light (the
experiments import matplotlib and aiohttp only when they run)."""

from __future__ import annotations

import argparse

DEFAULT_CONCURRENCY = 256
DEFAULT_SEED = 2026
DEFAULT_COMPARE = ("ring=--policy ring", "maglev=--policy maglev")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `ringlb analyze` options to `parser`."""
    parser.add_argument("--url", help="measure this running balancer instead of starting one")
    parser.add_argument("--out", default="docs/analysis", help="output folder [docs/analysis]")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per measurement")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the request ids")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight at most"
    )
    parser.add_argument("--n-min", type=int, default=2, help="smallest N of A-2")
    parser.add_argument("--n-max", type=int, default=6, help="largest N of A-2")
    parser.add_argument(
        "--stream-rate",
        type=float,
        default=200.0,
        help="A-3 failure experiment: requests per second",
    )
    parser.add_argument(
        "--stream-seconds",
        type=float,
        default=12.0,
        help="A-3 failure experiment: length of the stream (s)",
    )
    parser.add_argument(
        "--kill-at",
        type=float,
        default=4.0,
        help="A-3 failure experiment: when the replica is killed (s)",
    )
    parser.add_argument(
        "--compare",
        action="append",
        metavar="NAME=SERVE_ARGS",
        help="A-4 live variant: a balancer started with these `ringlb serve` flags "
        f"(repeatable; default {' and '.join(DEFAULT_COMPARE)}; 'none' for none). "
        "Variants whose settings this ringlb does not know are reported as unavailable.",
    )
