"""The `ringlb` command: `serve` (the balancer) and `replica` (one replica server)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from ringlb import __version__
from ringlb.analysis.options import add_arguments as add_analyze_arguments
from ringlb.config import Settings, SettingsError, load_settings
from ringlb.logformat import configure_logging


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one `--flag` per Settings field, so flags and settings never drift apart."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        parser.add_argument(
            flag,
            dest=name,
            default=argparse.SUPPRESS,
            metavar=name.upper(),
            help=f"{field.description} [env RINGLB_{name.upper()}; default {default!r}]",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringlb", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ringlb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the load balancer")
    _add_settings_flags(serve)

    replica = commands.add_parser("replica", help="run one replica web server")
    replica.add_argument("--id", required=True, help="SERVER_ID, the replica's hostname")
    replica.add_argument("--host", default="0.0.0.0", help="listen address")
    replica.add_argument("--port", type=int, default=5000, help="listen port")
    replica.add_argument("--tls-cert", default=None, help="serve HTTPS with this PEM chain")
    replica.add_argument("--tls-key", default=None, help="... and this PEM key")

    analyze = commands.add_parser("analyze", help="run the experiments A-1..A-4 and report")
    add_analyze_arguments(analyze)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if command == "replica":
        from ringlb.replica.lifeline import die_with_parent
        from ringlb.replica.server import serve_replica

        die_with_parent()
        serve_replica(args["id"], args["host"], args["port"], args["tls_cert"], args["tls_key"])
        return 0
    if command == "analyze":
        from ringlb.analysis.runner import main as analyze

        return analyze(argparse.Namespace(**args))

    try:
        settings = load_settings(**args)
    except SettingsError as exc:
        print(f"ringlb: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from ringlb.app import serve
    from ringlb.eventloop import install_fast_loop

    install_fast_loop()
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except SettingsError as exc:
        print(f"ringlb: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        logging.getLogger("ringlb").error("cannot start: %s", exc)
        return 1
    return 0
