"""/api/v1/memories: documents the tenant saves for its agents, and memory search."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from troupe.errors import InvalidInput, Unavailable
from troupe.gateway.deps import ServicesDep, TenantDep
from troupe.gateway.errors import error_body
from troupe.gateway.schemas import DocumentCreate, MemorySearchView, MemoryView
from troupe.storage.vectors import Concern, VectorMemory

router = APIRouter(prefix="/api/v1/memories", tags=["memory"])

_ERROR = {"content": {"application/json": {"example": error_body("code", "what went wrong")}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such memory", **_ERROR},
    422: {"description": "Invalid request", **_ERROR},
    503: {"description": "Memory is disabled (memory.enabled: false)", **_ERROR},
}


def _memory(services: ServicesDep) -> VectorMemory:
    if services.vectors is None:
        raise Unavailable("memory is disabled on this deployment", code="memory_disabled")
    return services.vectors


@router.post("", status_code=201, response_model=MemoryView, responses=ERRORS)
async def save_document(
    body: DocumentCreate, tenant: TenantDep, services: ServicesDep
) -> MemoryView:
    """Remember a document for the tenant: agents find it with memory_search, and session
    tasks may be reminded of it."""
    if not body.text.strip():
        raise InvalidInput("text must not be blank", code="text_blank")
    saved = await _memory(services).remember(
        tenant, Concern.DOCUMENTS, body.text, key=f"doc_{secrets.token_hex(12)}", title=body.title
    )
    return MemoryView.of(saved)


@router.get("", response_model=MemorySearchView, responses=ERRORS)
async def search_memory(
    tenant: TenantDep,
    services: ServicesDep,
    query: Annotated[str, Query(min_length=1, max_length=1000)],
    concern: Annotated[Concern | None, Query(description="Only this concern")] = None,
    session_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> MemorySearchView:
    """The tenant's memories closest to `query`, best first (session turns only with
    `session_id`)."""
    found = await _memory(services).recall(
        tenant,
        query,
        concerns=[concern] if concern else list(Concern),
        session_id=session_id,
        limit=limit,
        min_score=-1.0,
    )
    return MemorySearchView(items=[MemoryView.of(r.memory, r.score) for r in found])


@router.get("/documents/{memory_id}", response_model=MemoryView, responses=ERRORS)
async def get_document(memory_id: str, tenant: TenantDep, services: ServicesDep) -> MemoryView:
    return MemoryView.of(await _memory(services).get(tenant, Concern.DOCUMENTS, memory_id))


@router.delete("/documents/{memory_id}", status_code=204, responses=ERRORS)
async def delete_document(memory_id: str, tenant: TenantDep, services: ServicesDep) -> Response:
    """Forget a saved document."""
    await _memory(services).forget(tenant, Concern.DOCUMENTS, memory_id=memory_id)
    return Response(status_code=204)
