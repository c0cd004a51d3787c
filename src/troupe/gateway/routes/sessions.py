"""/api/v1/sessions: the tenant's conversations; read one, list them, delete one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from troupe.errors import NotFound
from troupe.gateway.access import SessionOperation, check_session
from troupe.gateway.deps import PrincipalDep, ServicesDep
from troupe.gateway.errors import error_body
from troupe.gateway.schemas import SESSION_ID_PATTERN, SessionPageView, SessionView

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])

_ERROR = {"content": {"application/json": {"example": error_body("code", "what went wrong")}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such session", **_ERROR},
    422: {"description": "Invalid request", **_ERROR},
}
SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN)]


@router.get("", response_model=SessionPageView, responses=ERRORS)
async def list_sessions(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=120)] = None,
) -> SessionPageView:
    """The sessions the caller may read, most recently active first: an admin sees the
    tenant's, a member their own and the shared ones."""
    page = await services.sessions.list_sessions(
        principal.tenant_id,
        limit=limit,
        cursor=cursor,
        user_id=None if principal.role == "admin" else principal.user_id,
    )
    return SessionPageView(
        items=[SessionView.of(s) for s in page.items], next_cursor=page.next_cursor
    )


@router.get("/{session_id}", response_model=SessionView, responses=ERRORS)
async def get_session(
    session_id: SessionId, principal: PrincipalDep, services: ServicesDep
) -> SessionView:
    """The session: its summary of older turns and the finished turns after it."""
    await _existing(services, principal, session_id, "read")
    return SessionView.of(await services.sessions.state(principal.tenant_id, session_id))


@router.delete(
    "/{session_id}",
    status_code=204,
    responses={**ERRORS, 409: {"description": "A task of the session is unfinished", **_ERROR}},
)
async def delete_session(
    session_id: SessionId, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Forget the conversation: its messages, summary, hot state and the memories its
    tasks left. The tasks stay (they are the usage record), detached from it."""
    await _existing(services, principal, session_id, "write")
    await services.sessions.delete(principal.tenant_id, session_id)
    await services.keeper.session_deleted(principal.tenant_id, session_id)
    return Response(status_code=204)


async def _existing(
    services: ServicesDep, principal: PrincipalDep, session_id: str, operation: SessionOperation
) -> None:
    """404 unless the tenant has the session; then the policy's say for the caller."""
    if not await check_session(services, principal, session_id, operation):
        raise NotFound(f"session {session_id} not found", code="session_not_found")
