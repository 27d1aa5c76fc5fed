"""Log lines of every service and agent (issue 19): human-readable on a terminal, one JSON
object per line otherwise (a log shipper's input), chosen once per process.

A record's structured fields travel in ``extra={"fields": {...}}``; the JSON line carries
them as keys beside ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and
``msg``; the text line appends them as ``key=value``::

    log.info("request", extra={"fields": {"request_id": rid, "status": 200}})
    {"ts": "2025-01-02T03:04:05.678Z", "level": "info", "logger": "uptane.service",
     "msg": "request", "request_id": "9f2c...", "status": 200}

Nothing here writes a file: the handler writes to the stream it is given (stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("auto", "json", "text")
#: keys a JSON line always has; a field of the same name is renamed ``field_NAME``
_RESERVED = {"ts", "level", "logger", "msg"}
#: the largest value of one field written (a hostile string stays one short line)
_MAX_FIELD = 2000


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    raw = getattr(record, "fields", None)
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"field_{key}" if key in _RESERVED else str(key)
        if isinstance(value, str) and len(value) > _MAX_FIELD:
            value = value[:_MAX_FIELD] + "..."
        out[name] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TIME MESSAGE key=value ...``: what a person reads on a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if v is not None)
        return f"{text} {extra}" if extra else text


def choose(fmt: str, stream: TextIO) -> str:
    """``json`` or ``text`` for ``fmt`` (``auto``: text on a terminal, JSON otherwise)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if callable(isatty) and isatty() else "json"


def configure(
    name: str, fmt: str = "auto", *, stream: TextIO | None = None, level: int = logging.INFO
) -> str:
    """Send logger ``name`` (and its children) to ``stream`` (stderr) in ``fmt``; returns
    the format chosen. Called once by a command's ``main``; calling it again replaces the
    handler it added."""
    out = stream if stream is not None else sys.stderr
    chosen = choose(fmt, out)
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        if getattr(h, "_uptane_logs", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler._uptane_logs = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return chosen


def add_argument(parser: argparse.ArgumentParser) -> None:
    """The agents' ``--log-format`` option (text by default: an agent is mostly run by
    hand or by a unit file that keeps text)."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines (default) or JSON records, one per line (auto: JSON off a terminal)",
    )


def setup_agent(fmt: str, *, verbose: bool = False) -> None:
    """An agent's logging on stderr: JSON records for every logger when ``fmt`` chooses
    JSON, else the plain ``time name level message`` lines."""
    level = logging.DEBUG if verbose else logging.INFO
    if choose(fmt, sys.stderr) == "json":
        configure("", "json", level=level)
    else:
        logging.basicConfig(
            level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
        )


__all__ = [
    "FORMATS",
    "JsonFormatter",
    "TextFormatter",
    "add_argument",
    "choose",
    "configure",
    "setup_agent",
]
