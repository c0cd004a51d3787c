"""Logging set-up: readable text in development, one JSON object per line in production;
optionally also to a rotated file. Records carry the trace id of the span in progress."""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime

from troupe.config import LogSettings
from troupe.observability.tracing import current_trace_id

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


class TraceContext(logging.Filter):
    """Give each record the trace id of the span in progress (unless it has one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            record.trace_id = current_trace_id()
        return True


def configure_logging(settings: LogSettings) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.file is not None:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.file,
                maxBytes=settings.max_bytes,
                backupCount=settings.backup_count,
                encoding="utf-8",
            )
        )
    formatter = (
        JsonFormatter()
        if settings.format == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(TraceContext())
    root = logging.getLogger()
    root.handlers[:] = handlers
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
