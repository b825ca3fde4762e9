"""Structured JSON log lines. Only what is passed in ``extra`` under known keys is written: never bodies,
never patient data (see README, "Logs")."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

ALLOWED_KEYS = (
    "request_id",
    "method",
    "route",
    "status",
    "latency_ms",
    "client_id",
    "clinic_id",
    "error_class",
    "event",
    "count",
    "revision",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.msg if isinstance(record.msg, str) else type(record.msg).__name__,
        }
        line.update({k: getattr(record, k) for k in ALLOWED_KEYS if hasattr(record, k)})
        return json.dumps(line)


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger("kapfhir")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
