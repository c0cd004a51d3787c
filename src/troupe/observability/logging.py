"""Logging set-up: readable text in development, one JSON object per line in production."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from troupe.config import LogSettings

_CONTEXT_FIELDS = ("tenant_id", "task_id", "trace_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the bound context fields when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: LogSettings) -> None:
    handler = logging.StreamHandler()
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # Temporal's and uvicorn's access chatter stays out of INFO.
    noisy_loggers = (
        "uvicorn.access",
        "uvicorn.error",
        "httpx",
        "alembic",
        "temporalio.activity",
        "temporalio.worker",
    )
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
