"""Structured logs: one event per line, ``key=value``, request id on every request line.

Tokens never reach a log line: the auth interceptor logs only whether a token was
accepted, and request fields are logged by name, not by dumping metadata.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

LOGGER = logging.getLogger("cinetron.api")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    text = str(v)
    if not text or any(c in text for c in ' ="\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_event(event: str, **fields: Any) -> str:
    parts = [f"event={event}"]
    parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, format_event(event, **fields))


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        line = f"ts={ts}.{int(record.msecs):03d}Z level={level} {record.getMessage()}"
        if record.exc_info:
            # Tracebacks stay in the server log; clients only ever see the message.
            line += " traceback=" + _value(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
