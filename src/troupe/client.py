"""A typed client for the Troupe HTTP API, sync and async.

Event streams are followed with resume: when the connection drops, the client
reconnects with ``Last-Event-ID`` and continues after the last event it saw, so no
event is lost or repeated. Every non-2xx answer raises :class:`TroupeAPIError`
carrying the server's stable error ``code``.

Every request carries the API key (or JWT) given as ``api_key``, else the one in the
``TROUPE_API_KEY`` environment variable.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import anyio
import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from troupe.domain import EventType
from troupe.gateway.schemas import (
    BudgetsView,
    EventView,
    MemorySearchView,
    MemoryView,
    ProvidersView,
    SessionPageView,
    SessionView,
    TaskPageView,
    TaskView,
    UsageReportView,
)
from troupe.orchestrator.report import ReplayReport

_STREAM_ERRORS = (httpx.TransportError, httpx.RemoteProtocolError)
API_KEY_ENV = "TROUPE_API_KEY"


def _auth_headers(api_key: str | None) -> dict[str, str]:
    key = api_key or os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


class TroupeAPIError(Exception):
    """The API answered with an error body (or something that is not one)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "unexpected_response", response.text[:200]
    raise TroupeAPIError(response.status_code, code, message)


def _submit_body(query: str, **fields: Any) -> dict[str, Any]:
    """The submit request: the query and every field given that is not the default."""
    defaults = {"require_approval": False, "cache": True}
    body: dict[str, Any] = {"query": query}
    body.update(
        (name, value)
        for name, value in fields.items()
        if value is not None and value != defaults.get(name)
    )
    return body


def _range(since: date | None, until: date | None) -> dict[str, str]:
    params = {}
    if since is not None:
        params["since"] = since.isoformat()
    if until is not None:
        params["until"] = until.isoformat()
    return params


def _list_params(
    status: str | None, session_id: str | None, limit: int, cursor: str | None
) -> dict[str, str | int]:
    params: dict[str, str | int] = {"limit": limit}
    for key, value in (("status", status), ("session_id", session_id), ("cursor", cursor)):
        if value is not None:
            params[key] = value
    return params


def _memory_params(query: str, concern: str | None, session_id: str | None) -> dict[str, str]:
    params = {"query": query}
    if concern is not None:
        params["concern"] = concern
    if session_id is not None:
        params["session_id"] = session_id
    return params


def _event(sse: ServerSentEvent) -> EventView | None:
    if not sse.data:  # keep-alive pings carry no data
        return None
    return EventView.model_validate_json(sse.data)


def _is_terminal(event: EventView) -> bool:
    return EventType(event.type).terminal


# wait(): each long poll asks for at most this long, well inside the client's timeout.
_MAX_WAIT_S = 20.0
_WAIT_RECONNECTS = 10
_WAIT_BACKOFF_S = 0.1


def _wait_params(wait_s: float) -> dict[str, str]:
    return {"wait_s": f"{wait_s:g}"} if wait_s > 0 else {}


def _long_poll_s(timeout_s: float) -> float:
    return min(_MAX_WAIT_S, timeout_s / 2)


class _ResumePolicy:
    """How often and how fast to reconnect a dropped event stream."""

    def __init__(self, attempts: int, backoff_s: float) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.failures = 0

    def next_delay(self, exc: Exception) -> float:
        self.failures += 1
        if self.failures > self.attempts:
            raise exc
        delay: float = self.backoff_s * 2.0 ** (self.failures - 1)
        return min(delay, 2.0)


class AsyncTroupeClient:
    """Async client; use as ``async with AsyncTroupeClient(url) as client``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )
        self._wait_s = _long_poll_s(timeout_s)

    async def __aenter__(self) -> AsyncTroupeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit_task(
        self,
        query: str,
        *,
        session_id: str | None = None,
        strategy: str | None = None,
        token_budget: int | None = None,
        require_approval: bool = False,
        cache: bool = True,
        cost_budget_micro_usd: int | None = None,
        node_token_budget: int | None = None,
    ) -> TaskView:
        body = _submit_body(
            query,
            session_id=session_id,
            strategy=strategy,
            token_budget=token_budget,
            require_approval=require_approval,
            cache=cache,
            cost_budget_micro_usd=cost_budget_micro_usd,
            node_token_budget=node_token_budget,
        )
        response = await self._http.post("/api/v1/tasks", json=body)
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    async def get_task(self, task_id: str, *, wait_s: float = 0) -> TaskView:
        """The task; with ``wait_s``, once it has ended or after that many seconds."""
        response = await self._http.get(f"/api/v1/tasks/{task_id}", params=_wait_params(wait_s))
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    async def providers(self) -> ProvidersView:
        response = await self._http.get("/api/v1/providers")
        _raise_for(response)
        return ProvidersView.model_validate_json(response.content)

    async def budgets(self) -> BudgetsView:
        response = await self._http.get("/api/v1/budgets")
        _raise_for(response)
        return BudgetsView.model_validate_json(response.content)

    async def usage(self, since: date | None = None, until: date | None = None) -> UsageReportView:
        response = await self._http.get("/api/v1/usage", params=_range(since, until))
        _raise_for(response)
        return UsageReportView.model_validate_json(response.content)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        session_id: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> TaskPageView:
        params = _list_params(status, session_id, limit, cursor)
        response = await self._http.get("/api/v1/tasks", params=params)
        _raise_for(response)
        return TaskPageView.model_validate_json(response.content)

    async def cancel_task(self, task_id: str) -> TaskView:
        response = await self._http.post(f"/api/v1/tasks/{task_id}/cancel")
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    async def approve_task(self, task_id: str, reason: str = "") -> TaskView:
        response = await self._http.post(
            f"/api/v1/tasks/{task_id}/approve", json={"reason": reason}
        )
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    async def reject_task(self, task_id: str, reason: str) -> TaskView:
        response = await self._http.post(f"/api/v1/tasks/{task_id}/reject", json={"reason": reason})
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    async def replay_task(self, task_id: str) -> ReplayReport:
        response = await self._http.post(f"/api/v1/tasks/{task_id}/replay")
        _raise_for(response)
        return ReplayReport.model_validate_json(response.content)

    async def get_session(self, session_id: str) -> SessionView:
        """The session's summary of older turns and the finished turns after it."""
        response = await self._http.get(f"/api/v1/sessions/{session_id}")
        _raise_for(response)
        return SessionView.model_validate_json(response.content)

    async def list_sessions(self, *, limit: int = 20, cursor: str | None = None) -> SessionPageView:
        params: dict[str, str | int] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await self._http.get("/api/v1/sessions", params=params)
        _raise_for(response)
        return SessionPageView.model_validate_json(response.content)

    async def delete_session(self, session_id: str) -> None:
        """Forget the conversation (its tasks stay, detached)."""
        _raise_for(await self._http.delete(f"/api/v1/sessions/{session_id}"))

    async def save_document(self, text: str, *, title: str | None = None) -> MemoryView:
        """Remember a document for the tenant's agents."""
        response = await self._http.post("/api/v1/memories", json={"text": text, "title": title})
        _raise_for(response)
        return MemoryView.model_validate_json(response.content)

    async def search_memory(
        self, query: str, *, concern: str | None = None, session_id: str | None = None
    ) -> MemorySearchView:
        params = _memory_params(query, concern, session_id)
        response = await self._http.get("/api/v1/memories", params=params)
        _raise_for(response)
        return MemorySearchView.model_validate_json(response.content)

    async def delete_document(self, memory_id: str) -> None:
        _raise_for(await self._http.delete(f"/api/v1/memories/documents/{memory_id}"))

    async def task_history(self, task_id: str) -> dict[str, Any]:
        """``{"workflow_id": ..., "history": <Temporal's history JSON>}``."""
        response = await self._http.get(f"/api/v1/tasks/{task_id}/history")
        _raise_for(response)
        history: dict[str, Any] = response.json()
        return history

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def follow(
        self,
        task_id: str,
        *,
        after: int = 0,
        reconnect_attempts: int = 10,
        backoff_s: float = 0.1,
    ) -> AsyncIterator[EventView]:
        """Yield the task's events in order until its terminal event, resuming on drops."""
        cursor = after
        policy = _ResumePolicy(reconnect_attempts, backoff_s)
        while True:
            try:
                headers = {"Last-Event-ID": str(cursor)}
                url = f"/api/v1/tasks/{task_id}/events"
                async with aconnect_sse(self._http, "GET", url, headers=headers) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        _raise_for(source.response)
                    async for sse in source.aiter_sse():
                        event = _event(sse)
                        if event is None:
                            continue
                        cursor = event.seq
                        policy.failures = 0
                        yield event
                        if _is_terminal(event):
                            return
                # A clean close without the terminal event: resumed past the end?
                if (await self.get_task(task_id)).status.terminal:
                    return
            except _STREAM_ERRORS as exc:
                await anyio.sleep(policy.next_delay(exc))

    async def wait(self, task_id: str) -> TaskView:
        """The task's final state, once it has ended (long polls, resumed on drops)."""
        policy = _ResumePolicy(_WAIT_RECONNECTS, _WAIT_BACKOFF_S)
        while True:
            try:
                task = await self.get_task(task_id, wait_s=self._wait_s)
            except _STREAM_ERRORS as exc:
                await anyio.sleep(policy.next_delay(exc))
                continue
            if task.status.terminal:
                return task
            policy.failures = 0


class TroupeClient:
    """Blocking client; use as ``with TroupeClient(url) as client``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers=_auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )
        self._wait_s = _long_poll_s(timeout_s)

    def __enter__(self) -> TroupeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit_task(
        self,
        query: str,
        *,
        session_id: str | None = None,
        strategy: str | None = None,
        token_budget: int | None = None,
        require_approval: bool = False,
        cache: bool = True,
        cost_budget_micro_usd: int | None = None,
        node_token_budget: int | None = None,
    ) -> TaskView:
        body = _submit_body(
            query,
            session_id=session_id,
            strategy=strategy,
            token_budget=token_budget,
            require_approval=require_approval,
            cache=cache,
            cost_budget_micro_usd=cost_budget_micro_usd,
            node_token_budget=node_token_budget,
        )
        response = self._http.post("/api/v1/tasks", json=body)
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    def get_task(self, task_id: str, *, wait_s: float = 0) -> TaskView:
        """The task; with ``wait_s``, once it has ended or after that many seconds."""
        response = self._http.get(f"/api/v1/tasks/{task_id}", params=_wait_params(wait_s))
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    def providers(self) -> ProvidersView:
        """The model providers with their breaker state, and each tier's candidates."""
        response = self._http.get("/api/v1/providers")
        _raise_for(response)
        return ProvidersView.model_validate_json(response.content)

    def budgets(self) -> BudgetsView:
        """The tenant's daily token budget today, and what one task may ask for."""
        response = self._http.get("/api/v1/budgets")
        _raise_for(response)
        return BudgetsView.model_validate_json(response.content)

    def usage(self, since: date | None = None, until: date | None = None) -> UsageReportView:
        """Tokens and cost of the tenant's model calls over UTC days (default: 30 days)."""
        response = self._http.get("/api/v1/usage", params=_range(since, until))
        _raise_for(response)
        return UsageReportView.model_validate_json(response.content)

    def list_tasks(
        self,
        *,
        status: str | None = None,
        session_id: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> TaskPageView:
        params = _list_params(status, session_id, limit, cursor)
        response = self._http.get("/api/v1/tasks", params=params)
        _raise_for(response)
        return TaskPageView.model_validate_json(response.content)

    def cancel_task(self, task_id: str) -> TaskView:
        response = self._http.post(f"/api/v1/tasks/{task_id}/cancel")
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    def approve_task(self, task_id: str, reason: str = "") -> TaskView:
        response = self._http.post(f"/api/v1/tasks/{task_id}/approve", json={"reason": reason})
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    def reject_task(self, task_id: str, reason: str) -> TaskView:
        response = self._http.post(f"/api/v1/tasks/{task_id}/reject", json={"reason": reason})
        _raise_for(response)
        return TaskView.model_validate_json(response.content)

    def replay_task(self, task_id: str) -> ReplayReport:
        response = self._http.post(f"/api/v1/tasks/{task_id}/replay")
        _raise_for(response)
        return ReplayReport.model_validate_json(response.content)

    def get_session(self, session_id: str) -> SessionView:
        """The session's summary of older turns and the finished turns after it."""
        response = self._http.get(f"/api/v1/sessions/{session_id}")
        _raise_for(response)
        return SessionView.model_validate_json(response.content)

    def list_sessions(self, *, limit: int = 20, cursor: str | None = None) -> SessionPageView:
        params: dict[str, str | int] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = self._http.get("/api/v1/sessions", params=params)
        _raise_for(response)
        return SessionPageView.model_validate_json(response.content)

    def delete_session(self, session_id: str) -> None:
        """Forget the conversation (its tasks stay, detached)."""
        _raise_for(self._http.delete(f"/api/v1/sessions/{session_id}"))

    def save_document(self, text: str, *, title: str | None = None) -> MemoryView:
        """Remember a document for the tenant's agents."""
        response = self._http.post("/api/v1/memories", json={"text": text, "title": title})
        _raise_for(response)
        return MemoryView.model_validate_json(response.content)

    def search_memory(
        self, query: str, *, concern: str | None = None, session_id: str | None = None
    ) -> MemorySearchView:
        params = _memory_params(query, concern, session_id)
        response = self._http.get("/api/v1/memories", params=params)
        _raise_for(response)
        return MemorySearchView.model_validate_json(response.content)

    def delete_document(self, memory_id: str) -> None:
        _raise_for(self._http.delete(f"/api/v1/memories/documents/{memory_id}"))

    def task_history(self, task_id: str) -> dict[str, Any]:
        """``{"workflow_id": ..., "history": <Temporal's history JSON>}``."""
        response = self._http.get(f"/api/v1/tasks/{task_id}/history")
        _raise_for(response)
        history: dict[str, Any] = response.json()
        return history

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def follow(
        self,
        task_id: str,
        *,
        after: int = 0,
        reconnect_attempts: int = 10,
        backoff_s: float = 0.1,
    ) -> Iterator[EventView]:
        """Yield the task's events in order until its terminal event, resuming on drops."""
        cursor = after
        policy = _ResumePolicy(reconnect_attempts, backoff_s)
        while True:
            try:
                headers = {"Last-Event-ID": str(cursor)}
                url = f"/api/v1/tasks/{task_id}/events"
                with connect_sse(self._http, "GET", url, headers=headers) as source:
                    if not source.response.is_success:
                        source.response.read()
                        _raise_for(source.response)
                    for sse in source.iter_sse():
                        event = _event(sse)
                        if event is None:
                            continue
                        cursor = event.seq
                        policy.failures = 0
                        yield event
                        if _is_terminal(event):
                            return
                # A clean close without the terminal event: resumed past the end?
                if self.get_task(task_id).status.terminal:
                    return
            except _STREAM_ERRORS as exc:
                time.sleep(policy.next_delay(exc))

    def wait(self, task_id: str) -> TaskView:
        """The task's final state, once it has ended (long polls, resumed on drops)."""
        policy = _ResumePolicy(_WAIT_RECONNECTS, _WAIT_BACKOFF_S)
        while True:
            try:
                task = self.get_task(task_id, wait_s=self._wait_s)
            except _STREAM_ERRORS as exc:
                time.sleep(policy.next_delay(exc))
                continue
            if task.status.terminal:
                return task
            policy.failures = 0
