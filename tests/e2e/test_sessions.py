"""Sessions and memory through `troupe serve`: a task continues the conversation before
it, older turns are summarized, and nothing crosses a tenant's wall."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import TroupeProcess, new_tenant_key
from troupe.client import TroupeAPIError, TroupeClient

pytestmark = pytest.mark.e2e


def _session() -> str:
    return f"chat-{secrets.token_hex(4)}"


def test_a_second_task_in_a_session_uses_the_first_ones_answer(client: TroupeClient) -> None:
    session = _session()
    first = client.wait(client.submit_task("Plan a day in Kyoto", session_id=session).id)
    second = client.wait(client.submit_task("And for a rainy day?", session_id=session).id)
    assert first.status == second.status == "completed"
    assert first.result is not None
    assert second.result is not None

    # What its agents were told: the turn before, verbatim...
    assert second.context is not None
    assert "User: Plan a day in Kyoto" in second.context
    assert f"Assistant: {first.result}" in second.context
    # ...and the model's answer draws on it (the simulation quotes the last answer).
    assert f"Earlier you were told: «{first.result[:60]}»" in second.result
    # The first task of a session has no conversation before it (memories of the
    # tenant's other tasks it may have: this server is shared by many tests).
    assert first.context is not None
    assert "## The conversation so far" not in first.context

    seen = client.get_session(session)
    assert seen.tasks == 2
    assert [t.task_id for t in seen.turns] == [first.id, second.id]
    assert seen.turns[1].question == "And for a rainy day?"
    assert session in [s.id for s in client.list_sessions(limit=200).items]


def test_a_task_outside_any_session_gets_no_context(client: TroupeClient) -> None:
    alone = client.wait(client.submit_task("What is a ryokan?").id)
    assert alone.status == "completed"
    assert alone.context is None
    assert "Earlier you were told" not in (alone.result or "")


def test_deleting_a_session_forgets_the_conversation_but_keeps_the_tasks(
    client: TroupeClient,
) -> None:
    session = _session()
    task = client.wait(client.submit_task("Remember the code word: heron", session_id=session).id)
    found = client.search_memory("code word heron", concern="session", session_id=session)
    assert [m.task_id for m in found.items] == [task.id]

    client.delete_session(session)

    with pytest.raises(TroupeAPIError) as gone:
        client.get_session(session)
    assert (gone.value.status, gone.value.code) == (404, "session_not_found")
    kept = client.get_task(task.id)
    assert kept.status == "completed"
    assert kept.session_id is None
    assert kept.context is None
    left = client.search_memory("code word heron", session_id=session).items
    assert [m for m in left if m.task_id == task.id or m.session_id == session] == []
    # A session with an unknown id is 404 too, and a malformed one is refused.
    with pytest.raises(TroupeAPIError) as unknown:
        client.delete_session(session)
    assert unknown.value.status == 404
    with pytest.raises(TroupeAPIError) as malformed:
        client.get_session("no spaces allowed")
    assert malformed.value.status == 422


def test_a_session_with_an_unfinished_task_cannot_be_deleted(client: TroupeClient) -> None:
    session = _session()
    waiting = client.submit_task(
        "Draft the plan", session_id=session, strategy="dag", require_approval=True
    )
    deadline = time.monotonic() + 30
    while client.get_task(waiting.id).status != "awaiting_approval":
        assert time.monotonic() < deadline, "the task never came to await approval"
        time.sleep(0.05)
    try:
        with pytest.raises(TroupeAPIError) as busy:
            client.delete_session(session)
        assert (busy.value.status, busy.value.code) == (409, "session_busy")
    finally:
        client.reject_task(waiting.id, reason="test over")
    client.wait(waiting.id)
    client.delete_session(session)


def test_saved_documents_are_found_by_their_tenant_only(served: TroupeProcess) -> None:
    a_key, b_key = new_tenant_key(served, "memory-a"), new_tenant_key(served, "memory-b")
    with TroupeClient(served.url, api_key=a_key) as a, TroupeClient(served.url, api_key=b_key) as b:
        saved = a.save_document("The staging database is rebuilt every Sunday.", title="Ops")
        assert saved.concern == "documents"
        hits = a.search_memory("when is the staging database rebuilt")
        assert hits.items[0].id == saved.id
        assert hits.items[0].score is not None
        assert all(m.id != saved.id for m in b.search_memory("staging database rebuilt").items)

        session = _session()
        a.wait(a.submit_task("Tenant A's private question", session_id=session).id)
        # B cannot read, list or delete A's session, nor A's document: 404 as if absent.
        for probe in (lambda: b.get_session(session), lambda: b.delete_session(session)):
            with pytest.raises(TroupeAPIError) as hidden:
                probe()
            assert hidden.value.status == 404
        assert session not in [s.id for s in b.list_sessions(limit=200).items]
        raw = httpx.delete(
            f"{served.url}/api/v1/memories/documents/{saved.id}",
            headers={"Authorization": f"Bearer {b_key}"},
        )
        assert raw.status_code == 404
        assert raw.json()["error"]["code"] == "memory_not_found"
        a.delete_document(saved.id)
        assert all(m.id != saved.id for m in a.search_memory("staging database").items)


@pytest.fixture(scope="module")
def short_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroupeProcess]:
    """`troupe serve` whose sessions show one turn verbatim: older ones are summarized."""
    data: Path = tmp_path_factory.mktemp("short-memory")
    env = {"TROUPE_DATA_DIR": str(data), "TROUPE_SESSIONS__MAX_TURNS": "1"}
    process = TroupeProcess("serve", env=env, log=data / "serve.log")
    process.start()
    yield process
    assert process.stop() == 0, process.output()


def test_older_turns_are_folded_into_a_summary_by_the_small_tier(
    short_memory: TroupeProcess,
) -> None:
    session = _session()
    with TroupeClient(short_memory.url, api_key=short_memory.api_key) as client:
        tasks = [
            client.wait(client.submit_task(q, session_id=session).id)
            for q in ("Pick a city", "Pick a hotel there", "Pick a restaurant nearby")
        ]
        third = tasks[2]
        assert third.context is not None
        # Turn 1 went into the summary; turn 2 stays verbatim after it (max_turns 1).
        state = client.get_session(session)
        assert state.summary is not None
        assert f"Summary of earlier turns: {state.summary}" in third.context
        verbatim = third.context.split(state.summary, 1)[1]
        assert "User: Pick a hotel there" in verbatim
        assert "User: Pick a city" not in verbatim
        assert [t.task_id for t in state.turns] == [tasks[1].id, tasks[2].id]
        # The summary was a metered call of the third task, on the small tier's model.
        calls = [e for e in client.follow(third.id) if e.type == "llm.call"]
        assert "sim-small" in [e.data["model"] for e in calls]
        prepared = [e for e in client.follow(third.id) if e.type == "context.prepared"]
        assert prepared[0].data["summarized"] == 1
