"""/api/v1/tasks/{id}/events: the task's events as Server-Sent Events, resumable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from troupe.gateway.deps import PrincipalDep, ServicesDep
from troupe.gateway.routes.tasks import ERRORS, session_task
from troupe.gateway.schemas import EventView

router = APIRouter(prefix="/api/v1/tasks", tags=["events"])

_PAGE = 500  # events read at once


@router.get(
    "/{task_id}/events",
    responses={
        **ERRORS,
        200: {"description": "An SSE stream; each message's id is the event's seq."},
    },
)
async def task_events(
    task_id: str,
    principal: PrincipalDep,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,9}$")] = None,
    after: Annotated[int | None, Query(ge=0, description="Resume after this seq.")] = None,
) -> EventSourceResponse:
    """Every event of the task from the start (or after `Last-Event-ID`), then live
    ones; the stream ends after the terminal event."""
    # 404 (or the policy's no) before the stream opens
    task_id = (await session_task(services, principal, task_id, "stream")).id
    tenant = principal.tenant_id
    cursor = int(last_event_id) if last_event_id is not None else (after or 0)
    return EventSourceResponse(
        _stream(services, tenant, task_id, cursor),
        ping=services.settings.events.ping_interval_s,
    )


async def _stream(
    services: ServicesDep, tenant: str, task_id: str, cursor: int
) -> AsyncIterator[ServerSentEvent]:
    poll_s = services.settings.events.poll_interval_ms / 1000
    # Listen before the first read, so nothing written in between goes unnoticed.
    async with services.fanout.listen(task_id) as listener:
        while True:
            events = await services.store.events_after(tenant, task_id, cursor, limit=_PAGE)
            for event in events:
                cursor = event.seq
                yield ServerSentEvent(
                    data=EventView.of(event).model_dump_json(),
                    event=event.type.value,
                    id=str(event.seq),
                )
                if event.type.terminal:
                    return
            if len(events) == _PAGE:
                continue  # more are stored already
            if not events:
                task = await services.store.get_task(tenant, task_id)
                if task.status.terminal and not await services.store.events_after(
                    tenant, task_id, cursor
                ):
                    return  # resumed after the end: nothing more will come
            # Whatever was written after the read above has woken the listener already.
            await listener.wait(poll_s)
