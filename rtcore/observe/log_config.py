"""Logging setup for ``rtcore serve``: readable text (default) or JSON lines.

``--log-format json`` writes one JSON object per line: ``ts`` (UTC, ISO 8601, milliseconds),
``level``, ``logger``, ``msg``, then the record's extra fields (``conn``, ``app``, ``remote``,
``code``, ``duration``...), and ``exc`` with the traceback when there is one. Text lines
escape control characters in the message (a newline becomes ``\\n``): a close reason or any
other text a client chose cannot forge a line; tracebacks keep their lines. Embedding
applications configure logging themselves; rtcore only logs to the ``rtcore.*`` loggers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = (
    "%(asctime)s %(levelname)s [worker %(worker)d pid %(pid)d] %(name)s: %(message)s"
)

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
"""LogRecord attributes that are not extra fields."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}"


def escape_control(text: str) -> str:
    """``text`` with its control characters (C0, DEL, C1, the Unicode line separators)
    written as escapes: one log record, one line."""
    return _CONTROL.sub(_escape, text)


class TextFormatter(logging.Formatter):
    """The text format, with the message's control characters escaped (:func:`escape_control`);
    a traceback or stack that follows keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return escape_control(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def level_name(value: str) -> str:
    """A log level name, case-insensitive (argparse ``type``; ``choices`` then checks it)."""
    return value.upper()


class WorkerFields(logging.Filter):
    """Marks every record with the worker it comes from (``rtcore serve --workers``): the
    fields ``worker`` (its index, 1..N) and ``pid``, which a restart changes."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        record.pid = record.process
        return True


def configure(
    level: str = "INFO", fmt: str = "text", stream: TextIO | None = None, worker: int | None = None
) -> None:
    """Send every log record at ``level`` and above to ``stream`` (stderr) as ``fmt``.

    Replaces the root logger's handlers: call it once, at start-up. ``worker``: the worker
    index, given in each line (text: ``[worker 1 pid 1234]``; json: ``worker``, ``pid``).
    """
    if level not in LEVELS or fmt not in FORMATS:
        raise ValueError(f"level must be one of {LEVELS} and format one of {FORMATS}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    text = TEXT_FORMAT if worker is None else WORKER_TEXT_FORMAT
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(text))
    if worker is not None:
        handler.addFilter(WorkerFields(worker))
    logging.basicConfig(level=level, handlers=[handler], force=True)
