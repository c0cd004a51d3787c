"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from troupe.errors import TroupeError
from troupe.gateway.deps import ServicesDep
from troupe.gateway.errors import error_body
from troupe.gateway.schemas import HealthView

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthView)
async def healthz() -> HealthView:
    """The process is up."""
    return HealthView(status="ok")


@router.get("/readyz", response_model=HealthView, responses={503: {"description": "Not ready"}})
async def readyz(services: ServicesDep) -> HealthView | JSONResponse:
    """The database, Temporal and the event fan-out answer; 503 names those that do not."""
    checks: dict[str, str] = {}
    probes = (
        ("database", services.store.ping),
        ("temporal", services.launcher.ping),
        ("events", services.fanout.ping),
    )
    for name, probe in probes:
        try:
            await probe()
            checks[name] = "ok"
        except (TroupeError, OSError) as exc:
            checks[name] = f"failing: {exc}"
        except Exception as exc:
            checks[name] = f"failing: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return HealthView(status="ready", checks=checks)
    return JSONResponse(
        error_body("not_ready", "a dependency is unavailable", checks=checks), status_code=503
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
