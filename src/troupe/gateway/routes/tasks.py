"""/api/v1/tasks: submit, read, list, cancel."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from troupe.app import Services
from troupe.auth.principal import Principal
from troupe.domain import Strategy, Task, TaskStatus
from troupe.errors import InvalidInput, NotFound
from troupe.gateway.access import SessionOperation, actor_of, check_session
from troupe.gateway.deps import LauncherDep, PrincipalDep, ServicesDep, SettingsDep, TenantDep
from troupe.gateway.errors import error_body
from troupe.gateway.limits import requested_budgets, today_budget
from troupe.gateway.schemas import (
    SESSION_ID_PATTERN,
    Decision,
    Rejection,
    TaskCreate,
    TaskPageView,
    TaskView,
)
from troupe.orchestrator.launcher import TASK_ID_PREFIX
from troupe.orchestrator.report import ReplayReport

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])

MAX_WAIT_S = 60.0  # the longest long poll of GET /api/v1/tasks/{id}?wait_s=

_TASK_ID = re.compile(rf"^{TASK_ID_PREFIX}[0-9a-f]{{24}}$")
_ERROR = {"content": {"application/json": {"example": error_body("code", "what went wrong")}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such task", **_ERROR},
    422: {"description": "Invalid request", **_ERROR},
}


async def session_task(
    services: Services, principal: Principal, task_id: str, operation: SessionOperation
) -> Task:
    """The caller's task, once the policy lets them ``operation`` its session (404 for
    another tenant's, like an unknown one)."""
    task = await services.store.get_task(principal.tenant_id, checked_task_id(task_id))
    await check_session(services, principal, task.session_id, operation)
    return task


async def _ended_within(
    services: Services, principal: Principal, task_id: str, wait_s: float
) -> Task:
    """The caller's task once it has ended, or as it is after ``wait_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    poll_s = services.settings.events.poll_interval_ms / 1000
    # Listen before the first read, so an ending written in between is not missed.
    async with services.fanout.listen(checked_task_id(task_id)) as listener:
        task = await session_task(services, principal, task_id, "read")
        while not task.status.terminal and (left := deadline - loop.time()) > 0:
            notified = await listener.wait(min(poll_s, left))
            handed_over = listener.take()
            if notified and handed_over and not any(e.type.terminal for e in handed_over):
                continue  # progress written in this process, not the end: nothing to read
            task = await services.store.get_task(principal.tenant_id, task.id)
    return task


def checked_task_id(task_id: str) -> str:
    """A malformed id names no task: 404, the same answer as an unknown one."""
    if not _TASK_ID.match(task_id):
        raise NotFound(f"task {task_id[:64]} not found", code="task_not_found")
    return task_id


@router.post("", status_code=202, response_model=TaskView, responses=ERRORS)
async def submit_task(
    body: TaskCreate,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    settings: SettingsDep,
) -> TaskView:
    """Accept a task; it runs durably. Follow it at `links.events`. The policy decides
    whether the tenant's plan allows it and whether a human must approve it first."""
    limits = settings.tasks
    if not body.query.strip():
        raise InvalidInput("query must not be blank", code="query_blank")
    if len(body.query) > limits.max_query_chars:
        raise InvalidInput(
            f"query has {len(body.query)} characters; at most {limits.max_query_chars} allowed",
            code="query_too_long",
        )
    budgets = requested_budgets(
        principal,
        settings,
        token_budget=body.token_budget,
        cost_budget_micro_usd=body.cost_budget_micro_usd,
        node_token_budget=body.node_token_budget,
    )
    actor = actor_of(principal)
    await check_session(services, principal, body.session_id, "write")
    decision = await services.authorizer.require(
        "task.submit",
        actor,
        {
            "strategy": body.strategy,
            "token_budget": budgets.task_tokens,
            "cost_budget_micro_usd": budgets.task_micro_usd,
            "require_approval": body.require_approval,
            "session_id": body.session_id,
        },
    )
    task = await services.launcher.submit(
        tenant_id=principal.tenant_id,
        query=body.query,
        session_id=body.session_id,
        strategy=None if body.strategy == "auto" else Strategy(body.strategy),
        token_budget=budgets.task_tokens,
        budgets=budgets,
        day=today_budget(principal),
        require_approval=body.require_approval or decision.require_approval,
        use_cache=body.cache,
        actor=actor,
        user_id=principal.user_id,
        api_key_id=principal.key_id,
        max_active=principal.limits.max_concurrent_tasks,
        key_max_active=principal.limits.key_max_concurrent_tasks,
    )
    view = TaskView.of(task)
    response.headers["Location"] = view.links.self
    return view


@router.get("", response_model=TaskPageView, responses=ERRORS)
async def list_tasks(
    principal: PrincipalDep,
    services: ServicesDep,
    status: TaskStatus | None = None,
    session_id: Annotated[str | None, Query(pattern=SESSION_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> TaskPageView:
    """Newest first, `limit` at a time; pass `next_cursor` back as `cursor`."""
    await check_session(services, principal, session_id, "read")
    page = await services.store.list_tasks(
        principal.tenant_id,
        status=status,
        session_id=session_id,
        limit=limit,
        before=int(cursor) if cursor else None,
    )
    return TaskPageView(
        items=[TaskView.of(t) for t in page.items],
        next_cursor=str(page.next_cursor) if page.next_cursor is not None else None,
    )


@router.get("/{task_id}", response_model=TaskView, responses=ERRORS)
async def get_task(
    task_id: str,
    principal: PrincipalDep,
    services: ServicesDep,
    wait_s: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Long poll: answer once the task has ended, or after this many "
            "seconds with the task as it is then (0: at once).",
        ),
    ] = 0,
) -> TaskView:
    """The task, its result or error, its usage so far, its plan's nodes, and the steps
    of its tool-using agents with their BeliefState."""
    if wait_s > 0:
        task = await _ended_within(services, principal, task_id, wait_s)
    else:
        task = await session_task(services, principal, task_id, "read")
    store, tenant = services.store, principal.tenant_id
    nodes = await store.task_nodes(tenant, task.id) if task.plan is not None else []
    return TaskView.of(task, nodes, await store.agent_steps(tenant, task.id))


@router.post(
    "/{task_id}/cancel",
    status_code=202,
    response_model=TaskView,
    responses={**ERRORS, 409: {"description": "The task already ended", **_ERROR}},
)
async def cancel_task(task_id: str, principal: PrincipalDep, services: ServicesDep) -> TaskView:
    """Request cancellation; the task ends `cancelled` once its agents have stopped."""
    task = await session_task(services, principal, task_id, "cancel")
    return TaskView.of(
        await services.launcher.cancel(tenant_id=principal.tenant_id, task_id=task.id)
    )


_DECISION_ERRORS = {**ERRORS, 409: {"description": "The task is not awaiting approval", **_ERROR}}


@router.post(
    "/{task_id}/approve", status_code=202, response_model=TaskView, responses=_DECISION_ERRORS
)
async def approve_task(
    task_id: str, tenant: TenantDep, launcher: LauncherDep, body: Decision | None = None
) -> TaskView:
    """Let a task that awaits approval go ahead with its plan."""
    task = await launcher.decide(
        tenant_id=tenant,
        task_id=checked_task_id(task_id),
        approved=True,
        reason=body.reason if body else "",
    )
    return TaskView.of(task)


@router.post(
    "/{task_id}/reject", status_code=202, response_model=TaskView, responses=_DECISION_ERRORS
)
async def reject_task(
    task_id: str, body: Rejection, tenant: TenantDep, launcher: LauncherDep
) -> TaskView:
    """Stop a task that awaits approval; it ends `rejected` with the reason."""
    task = await launcher.decide(
        tenant_id=tenant, task_id=checked_task_id(task_id), approved=False, reason=body.reason
    )
    return TaskView.of(task)


@router.post(
    "/{task_id}/replay",
    response_model=ReplayReport,
    responses={**ERRORS, 409: {"description": "The task has not ended", **_ERROR}},
)
async def replay_task(task_id: str, principal: PrincipalDep, services: ServicesDep) -> ReplayReport:
    """Replay the task's workflow history against the running code and compare the
    recorded outputs with storage: a determinism and consistency report."""
    task = await session_task(services, principal, task_id, "replay")
    return await services.launcher.replay(tenant_id=principal.tenant_id, task_id=task.id)


@router.get("/{task_id}/history", responses=ERRORS)
async def task_history(task_id: str, tenant: TenantDep, launcher: LauncherDep) -> JSONResponse:
    """The task's workflow history as Temporal's JSON (what `troupe replay --export` saves)."""
    history = await launcher.history(tenant_id=tenant, task_id=checked_task_id(task_id))
    return JSONResponse({"workflow_id": history.workflow_id, "history": history.to_json_dict()})
