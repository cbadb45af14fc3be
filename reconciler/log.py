"""Logging: one line per write and per error, as text (key=value) or JSON, with the object's
namespace/name and the reason carried in `extra`."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from reconciler.text import LOG_VALUE_MAX, clip

EXCEPTION_MAX = 8192
"""Characters of a traceback (the API server's error messages can quote tenant input)."""

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra` fields, each bounded (they carry names and messages tenants control)."""
    return {k: _bounded(v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _bounded(value: Any) -> Any:
    """Numbers as they are; anything else clipped to `LOG_VALUE_MAX` characters of its text."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return clip(value, LOG_VALUE_MAX)
    return value if len(str(value)) <= LOG_VALUE_MAX else clip(str(value), LOG_VALUE_MAX)


def _message(record: logging.LogRecord) -> str:
    return clip(record.getMessage(), LOG_VALUE_MAX)


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    return clip(formatter.formatException(record.exc_info), EXCEPTION_MAX) if record.exc_info else ""


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname:<7} {record.name}: {_message(record)}"
        extras = " ".join(f"{k}={_quote(v)}" for k, v in _extras(record).items())
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{_exception(self, record)}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = _exception(self, record)
        return json.dumps(doc, default=str)


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="')) else text


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "kubernetes_asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
