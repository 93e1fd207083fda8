"""Log line formats for `--log-format`: `text` (for people), `json` and `logfmt` (for
log pipelines). Every record is one line in json and logfmt, tracebacks included; fields
passed as `extra=` (the access log's method, path, status...) become keys of their own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json", "logfmt"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """Returns the record as ordered fields: ts, level, logger, msg, extras, then exc."""
    created = datetime.fromtimestamp(record.created, UTC)
    fields: dict[str, Any] = {
        "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    """One compact JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            record_fields(record, self), separators=(",", ":"), ensure_ascii=False, default=str
        )


class LogfmtFormatter(logging.Formatter):
    """`key=value` pairs; values with spaces, quotes or `=` are quoted, newlines escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{key}={logfmt_value(value)}" for key, value in record_fields(record, self).items()
        )


def logfmt_value(value: object) -> str:
    """Returns `value` as a logfmt value, quoted only when it must be."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


FORMATTERS: dict[str, type[logging.Formatter]] = {
    "json": JsonFormatter,
    "logfmt": LogfmtFormatter,
}


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Sends every log record to stderr in `fmt`, replacing any handler already set."""
    handler = logging.StreamHandler(sys.stderr)
    factory = FORMATTERS.get(fmt)
    handler.setFormatter(factory() if factory else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
