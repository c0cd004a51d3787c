"""Logs: JSON lines carrying the trace id of the span in progress, and rotated files."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from troupe.config import LogSettings
from troupe.observability.logging import configure_logging

TRACE_ID = 0x5B8AA5A2D2C872E8321CF37308D69DF2
SPAN_ID = 0x051581BF3CB55C13


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_a_record_written_inside_a_span_carries_its_trace_id(tmp_path: Path) -> None:
    log = tmp_path / "troupe.log"
    configure_logging(LogSettings(format="json", file=log))
    logger = logging.getLogger("troupe.test")
    span = NonRecordingSpan(
        SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    )
    with trace.use_span(span):
        logger.warning("inside", extra={"task_id": "tsk_1", "tenant_id": "acme"})
    logger.warning("outside")
    inside, outside = (json.loads(line) for line in log.read_text().splitlines())
    assert inside["trace_id"] == "5b8aa5a2d2c872e8321cf37308d69df2"
    assert (inside["task_id"], inside["tenant_id"], inside["message"]) == (
        "tsk_1",
        "acme",
        "inside",
    )
    assert "trace_id" not in outside
    assert outside["level"] == "WARNING"


@pytest.mark.usefixtures("restore_logging")
def test_the_log_file_is_rotated_at_its_size_keeping_its_backups(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "troupe.log"
    configure_logging(LogSettings(file=log, max_bytes=1024, backup_count=2))
    logger = logging.getLogger("troupe.test")
    for n in range(100):
        logger.warning("line %d %s", n, "x" * 100)
    assert sorted(p.name for p in log.parent.iterdir()) == [
        "troupe.log",
        "troupe.log.1",
        "troupe.log.2",
    ]
    assert all(p.stat().st_size <= 1024 for p in log.parent.iterdir())
    assert "line 99" in log.read_text()
