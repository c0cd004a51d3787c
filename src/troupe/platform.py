"""Running Troupe in a process: the embedded platform or one production role.

``troupe serve`` runs everything in one process (embedded Temporal unless
``temporal.address`` is set); ``troupe api`` and ``troupe worker`` run one role each
against shared servers. All three are :func:`running_platform` with different roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server
from temporalio.worker import Worker

import troupe
from troupe.app import Services
from troupe.auth.dev import ensure_dev_key
from troupe.config import Settings
from troupe.errors import ConfigError
from troupe.gateway.app import create_app
from troupe.observability import metrics
from troupe.observability.tracing import configure_tracing
from troupe.orchestrator.devserver import TemporalDevServer
from troupe.storage import database

logger = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the platform owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningPlatform:
    services: Services
    base_url: str | None
    devserver: TemporalDevServer | None
    # The embedded default's tenant key (auth.dev_tenant); None in production roles.
    dev_api_key: str | None = None


@contextlib.asynccontextmanager
async def running_platform(
    settings: Settings,
    *,
    api: bool,
    worker: bool,
    devserver: TemporalDevServer | None = None,
) -> AsyncIterator[RunningPlatform]:
    """Start the requested roles; on exit stop them in reverse order, gracefully.

    ``devserver`` is an embedded Temporal the caller already launched (so it boots
    while this module imports); the platform owns it from here on and stops it.
    """
    all_in_one = api and worker
    metrics.initialize(
        (c.provider, c.model) for candidates in settings.llm.tiers.values() for c in candidates
    )
    metrics.BUILD.info(
        {
            "version": troupe.__version__,
            "role": "serve" if all_in_one else "api" if api else "worker",
        }
    )
    if settings.embedded:
        if not all_in_one:
            raise ConfigError(
                "temporal.address is not set: `troupe api` and `troupe worker` need a shared "
                "Temporal; use `troupe serve` for the embedded one"
            )
        devserver = devserver or TemporalDevServer.for_settings(settings)
    if not all_in_one and settings.memory.enabled and settings.memory.qdrant_url is None:
        raise ConfigError(
            "memory.qdrant_url is not set: Qdrant local mode serves one process only; "
            "`troupe api` and `troupe worker` need a Qdrant server (or memory.enabled: false)"
        )
    tracing = _tracing(settings)
    try:
        if devserver is not None and not devserver.launched:
            devserver.launch()
        await _prepare_storage(settings, devserver, migrate=all_in_one)
        address = devserver.address if devserver else settings.temporal.address
        assert address is not None
        services = await Services.from_settings(settings, temporal_address=address)
        try:
            dev_key = None
            if all_in_one and settings.embedded and settings.auth.dev_tenant:
                dev_key = await ensure_dev_key(
                    services.directory, settings.data_dir, plan=settings.policy.default_plan
                )
            async with _worker(services, enabled=worker), _api(services, enabled=api) as url:
                yield RunningPlatform(
                    services=services, base_url=url, devserver=devserver, dev_api_key=dev_key
                )
        finally:
            await services.aclose()
    finally:
        if devserver is not None:
            await asyncio.to_thread(devserver.stop)
        if tracing is not None:
            tracing.shutdown()  # sends the spans still buffered


def _tracing(settings: Settings) -> TracerProvider | None:
    """This process's tracer provider, when tracing is on and none is installed yet."""
    if not settings.tracing.enabled or isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    return configure_tracing(settings.tracing)


async def _prepare_storage(
    settings: Settings, devserver: TemporalDevServer | None, *, migrate: bool
) -> None:
    """Bring the schema up (or check it) while the embedded Temporal starts.

    Only the all-in-one platform migrates; production roles refuse an old schema.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = database.create_engine(settings.database_url)
    try:
        schema = (
            database.ensure_current_schema(engine)
            if migrate
            else database.require_current_schema(engine)
        )
        if devserver is not None:
            await asyncio.gather(asyncio.to_thread(devserver.wait_listening), schema)
        else:
            await schema
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _worker(services: Services, *, enabled: bool) -> AsyncIterator[Worker | None]:
    if not enabled:
        yield None
        return
    worker = await services.worker()
    running = asyncio.create_task(worker.run(), name="temporal-worker")
    try:
        yield worker
    finally:
        await worker.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await running


@contextlib.asynccontextmanager
async def _api(services: Services, *, enabled: bool) -> AsyncIterator[str | None]:
    if not enabled:
        yield None
        return
    server_settings = services.settings.server
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((server_settings.host, server_settings.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(services),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = _QuietServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="http-api")
    try:
        while not server.started:
            if serving.done():
                await serving  # surfaces the start-up error
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def serve_worker_metrics(settings: Settings) -> None:
    """/metrics for a standalone worker, when a port is configured."""
    if settings.worker.metrics_port:
        start_http_server(settings.worker.metrics_port, addr=settings.server.host)
        logger.info("worker metrics on %s:%d", settings.server.host, settings.worker.metrics_port)
