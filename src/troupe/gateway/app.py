"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

import troupe
from troupe.app import Services
from troupe.gateway.errors import install_error_handlers
from troupe.gateway.middleware import BodyLimitMiddleware, MetricsMiddleware
from troupe.gateway.routes import (
    budgets,
    events,
    health,
    memories,
    policy,
    providers,
    sessions,
    tasks,
    usage,
)

DESCRIPTION = """
Submit a task, follow its events live, read its result and what it cost.

Every error is JSON: `{"error": {"code": "...", "message": "..."}}` with a stable `code`.
"""


def create_app(services: Services) -> FastAPI:
    """An API bound to ``services`` (built by the caller, closed by the caller)."""
    app = FastAPI(title="Troupe", version=troupe.__version__, description=DESCRIPTION)
    app.state.services = services
    install_error_handlers(app)
    app.include_router(tasks.router)
    app.include_router(events.router)
    app.include_router(sessions.router)
    app.include_router(memories.router)
    app.include_router(providers.router)
    app.include_router(usage.router)
    app.include_router(budgets.router)
    app.include_router(policy.router)
    app.include_router(health.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.settings.server.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    if services.settings.tracing.enabled:
        # Imported on use: the instrumentation costs start-up time an untraced API skips.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Every request but the probes and scrapes opens (or continues) a trace.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app
