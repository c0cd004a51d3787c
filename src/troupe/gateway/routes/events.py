"""/api/v1/tasks/{id}/events: the task's events as Server-Sent Events, resumable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from troupe.domain import TaskEvent
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
    notified = False  # the last wait ended with a notification, not the poll interval
    # Listen before the first read, so nothing written in between goes unnoticed.
    async with services.fanout.listen(task_id) as listener:
        while True:
            handed_over = _carrying_on(listener.take(), cursor)
            events = (
                handed_over
                if handed_over is not None
                else await services.store.events_after(tenant, task_id, cursor, limit=_PAGE)
            )
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
            # Nothing new, and no writer is at work (a notification that finds nothing
            # only means an earlier read took what it announced): has the task ended?
            if not events and not notified:
                task = await services.store.get_task(tenant, task_id)
                if task.status.terminal and not await services.store.events_after(
                    tenant, task_id, cursor
                ):
                    return  # resumed after the end: nothing more will come
            # Whatever was written after the read above has woken the listener already.
            notified = await listener.wait(poll_s)


def _carrying_on(handed_over: list[TaskEvent], cursor: int) -> list[TaskEvent] | None:
    """The events handed over by this process's writers, when they are all that came
    after ``cursor`` as far as the reader can tell (they carry on from it without a gap);
    None: storage must be read (nothing handed over, or a gap, e.g. from another
    process's write)."""
    new = [e for e in handed_over if e.seq > cursor]
    if not new or any(e.seq != cursor + 1 + i for i, e in enumerate(new)):
        return None
    return new
