"""OpenTelemetry tracing: one trace per task.

The HTTP request that submits a task opens it (FastAPI instrumentation); Temporal's
TracingInterceptor carries its context into the workflow and every activity (across
processes and restarts); inside activities, every LLM call, tool call and sandbox run
is a span of its own. Spans leave the process through OTLP (or stderr). Without
``tracing.enabled`` no provider is installed and every span is OpenTelemetry's no-op.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

import troupe
from troupe.config import TracingSettings

TRACER = "troupe"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER, troupe.__version__)


def configure_tracing(
    settings: TracingSettings, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install the process's tracer provider (once per process: OpenTelemetry keeps the
    first); None when tracing is off. ``exporter``: export there, span by span (tests)."""
    if not settings.enabled and exporter is None:
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.service_name, "service.version": troupe.__version__}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    elif settings.exporter == "console":
        processor = BatchSpanProcessor(ConsoleSpanExporter())
    else:
        # Imported on use: the OTLP exporter pulls in protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str | None:
    """The trace id of the span in progress, as 32 hex digits (None: no trace)."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None
