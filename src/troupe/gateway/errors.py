"""The only place that knows HTTP statuses. Every error body is
``{"error": {"code": ..., "message": ...}}`` with a stable code."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from troupe.errors import (
    BudgetExceeded,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ProviderError,
    RateLimited,
    TroupeError,
    Unauthenticated,
    Unavailable,
)
from troupe.observability import metrics

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[TroupeError], int]] = [
    (InvalidInput, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (BudgetExceeded, 429),
    (RateLimited, 429),
    (Unavailable, 503),
    (ProviderError, 502),
    (ConfigError, 500),
]

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def status_for(exc: TroupeError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TroupeError, _troupe_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _troupe_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TroupeError)
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        metrics.LIMIT_REJECTIONS.labels(code=exc.code).inc()
    elif isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
        metrics.AUTH_FAILURES.labels(code=exc.code).inc()
    return JSONResponse(
        error_body(exc.code, exc.message), status_code=status_for(exc), headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(
            error_body("malformed_json", "the request body is not valid JSON"), status_code=400
        )
    details = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
            "problem": e.get("msg", "invalid"),
        }
        for e in errors
    ]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return JSONResponse(error_body("invalid_request", summary, details=details), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        error_body("internal_error", "an internal error occurred; it has been logged"),
        status_code=500,
    )
