"""The vector memory's contract, against Qdrant local mode on disk (the embedded default).

Tenant walls, session scoping, idempotent writes, forgetting, export and restore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from troupe.config import EmbeddingSettings, MemorySettings
from troupe.errors import ConfigError, NotFound
from troupe.llm.embeddings import HashingEmbedder
from troupe.storage.vectors import Concern, ExportedPoint, VectorMemory

pytestmark = pytest.mark.integration

SETTINGS = MemorySettings(embeddings=EmbeddingSettings(dimensions=128))


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[VectorMemory]:
    opened = await VectorMemory.open(SETTINGS, HashingEmbedder(128), tmp_path)
    try:
        yield opened
    finally:
        await opened.aclose()


async def _everything(memory: VectorMemory) -> list[ExportedPoint]:
    return [point async for page in memory.export() for point in page]


async def test_a_tenant_never_recalls_another_tenants_memory(memory: VectorMemory) -> None:
    await memory.remember("acme", Concern.TASKS, "Acme's launch date is 3 March", key="t1")
    await memory.remember("globex", Concern.TASKS, "Globex's launch date is 9 May", key="t1")
    await memory.remember("globex", Concern.DOCUMENTS, "launch date policy", key="d1")

    found = await memory.recall("acme", "when is the launch date", min_score=-1, limit=10)
    assert [r.memory.text for r in found] == ["Acme's launch date is 3 March"]
    assert all(r.memory.tenant_id == "acme" for r in found)
    assert await memory.count("acme") == {
        Concern.SESSION: 0,
        Concern.TASKS: 1,
        Concern.DOCUMENTS: 0,
    }
    # The same key in two tenants is two memories.
    assert (await memory.count())[Concern.TASKS] == 2


async def test_recall_ranks_by_similarity_and_drops_weak_matches(memory: VectorMemory) -> None:
    await memory.remember("acme", Concern.DOCUMENTS, "Kyoto temples open at 8 am", key="a")
    await memory.remember("acme", Concern.DOCUMENTS, "Kyoto trip budget: 2,400 USD", key="b")
    await memory.remember("acme", Concern.DOCUMENTS, "Rust lifetimes and borrowing", key="c")

    found = await memory.recall("acme", "what is the Kyoto trip budget", min_score=0.2)
    assert found[0].memory.text == "Kyoto trip budget: 2,400 USD"
    assert "Rust lifetimes and borrowing" not in [r.memory.text for r in found]
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    assert await memory.recall("acme", "   ") == []
    assert await memory.recall("acme", "Kyoto", limit=0) == []


async def test_session_memories_are_recalled_only_within_their_session(
    memory: VectorMemory,
) -> None:
    await memory.remember(
        "acme", Concern.SESSION, "we chose the ryokan in Gion", key="s1:t1", session_id="s1"
    )
    await memory.remember(
        "acme", Concern.SESSION, "we chose the hotel near Gion", key="s2:t1", session_id="s2"
    )
    query = "which ryokan did we choose in Gion"
    in_s1 = await memory.recall("acme", query, session_id="s1", min_score=-1)
    assert [r.memory.session_id for r in in_s1] == ["s1"]
    # Outside any session, no session's turns come back.
    assert await memory.recall("acme", query, concerns=[Concern.SESSION], min_score=-1) == []


async def test_remembering_the_same_key_again_replaces_it(memory: VectorMemory) -> None:
    first = await memory.remember("acme", Concern.TASKS, "draft answer", key="task-1")
    second = await memory.remember("acme", Concern.TASKS, "final answer", key="task-1")
    assert first.id == second.id
    assert (await memory.get("acme", Concern.TASKS, first.id)).text == "final answer"
    assert (await memory.count("acme"))[Concern.TASKS] == 1


async def test_recall_can_leave_out_given_tasks(memory: VectorMemory) -> None:
    await memory.remember("acme", Concern.TASKS, "Kyoto budget 2,400", key="1", task_id="t1")
    await memory.remember("acme", Concern.TASKS, "Kyoto budget 2,600", key="2", task_id="t2")
    found = await memory.recall("acme", "Kyoto budget", exclude_tasks=["t1"], min_score=-1)
    assert [r.memory.task_id for r in found] == ["t2"]


async def test_another_tenants_memory_is_not_found_and_cannot_be_forgotten(
    memory: VectorMemory,
) -> None:
    saved = await memory.remember("acme", Concern.DOCUMENTS, "secret plan", key="doc")
    with pytest.raises(NotFound):
        await memory.get("globex", Concern.DOCUMENTS, saved.id)
    with pytest.raises(NotFound):
        await memory.forget("globex", Concern.DOCUMENTS, memory_id=saved.id)
    with pytest.raises(NotFound):
        await memory.get("acme", Concern.DOCUMENTS, "not-a-uuid")
    assert (await memory.get("acme", Concern.DOCUMENTS, saved.id)).text == "secret plan"

    await memory.forget("acme", Concern.DOCUMENTS, memory_id=saved.id)
    with pytest.raises(NotFound):
        await memory.get("acme", Concern.DOCUMENTS, saved.id)


async def test_forgetting_a_session_leaves_other_sessions_and_tenants(
    memory: VectorMemory,
) -> None:
    for tenant, session in [("acme", "s1"), ("acme", "s2"), ("globex", "s1")]:
        await memory.remember(
            tenant, Concern.SESSION, f"{tenant} {session}", key=session, session_id=session
        )
    await memory.forget("acme", Concern.SESSION, session_id="s1")
    left = sorted(p.payload["text"] for p in await _everything(memory))
    assert left == ["acme s2", "globex s1"]
    assert [m.text for m in await memory.browse("acme", Concern.SESSION)] == ["acme s2"]


async def test_export_then_restore_brings_back_every_point(
    memory: VectorMemory, tmp_path: Path
) -> None:
    for n in range(300):  # more than one export page
        await memory.remember("acme", Concern.TASKS, f"result {n}", key=str(n), task_id=f"t{n}")
    await memory.remember("acme", Concern.DOCUMENTS, "a saved note", key="note", title="Note")
    exported = await _everything(memory)
    assert len(exported) == 301

    other = await VectorMemory.open(SETTINGS, HashingEmbedder(128), tmp_path / "elsewhere")
    try:
        await other.restore(exported)
        assert sorted(p.id for p in await _everything(other)) == sorted(p.id for p in exported)
        found = await other.recall("acme", "a saved note", min_score=0.5)
        assert found[0].memory.title == "Note"
    finally:
        await other.aclose()


async def test_the_local_directory_is_one_process_at_a_time(
    memory: VectorMemory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="open in another process"):
        await VectorMemory.open(SETTINGS, HashingEmbedder(128), tmp_path)


async def test_an_embedder_of_another_size_is_refused_at_open(tmp_path: Path) -> None:
    first = await VectorMemory.open(SETTINGS, HashingEmbedder(128), tmp_path)
    await first.aclose()
    with pytest.raises(ConfigError, match="holds vectors of 128 dimensions"):
        await VectorMemory.open(SETTINGS, HashingEmbedder(64), tmp_path)
