"""Vector memory in Qdrant: one collection per concern, every point tagged with its tenant.

Concerns: ``session`` (each finished turn of a session, recalled only within that
session), ``tasks`` (each finished task's question and answer, recalled across the
tenant) and ``documents`` (texts users save through the API). Every search filters on
``tenant_id``: no query can reach another tenant's points.

Qdrant local mode (qdrant-client on a directory, one process at a time) is the
embedded default; a Qdrant server by URL in production, with keyword payload indexes
on ``tenant_id`` (``is_tenant``) and ``session_id``. Point ids are derived from
(tenant, concern, key), so remembering the same thing twice overwrites it: a retried
activity writes no duplicate.
"""

from __future__ import annotations

import fcntl
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from troupe.errors import ConfigError, NotFound
from troupe.llm.embeddings import Embedder

if TYPE_CHECKING:
    from qdrant_client import AsyncQdrantClient
    from qdrant_client.models import Filter

    from troupe.config import MemorySettings

# Fixed forever: point ids derived from it must stay the same across versions.
_ID_NAMESPACE = uuid.UUID("6f1c0a52-3d43-4c8e-9a57-2c1f3b9e8d10")
_EXPORT_PAGE = 256


class Concern(StrEnum):
    SESSION = "session"
    TASKS = "tasks"
    DOCUMENTS = "documents"


@dataclass(frozen=True)
class Memory:
    """One remembered text and where it came from."""

    id: str
    concern: Concern
    tenant_id: str
    text: str
    created_at: datetime
    session_id: str | None = None
    task_id: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Recalled:
    memory: Memory
    score: float  # cosine similarity to the query, -1..1


@dataclass(frozen=True)
class ExportedPoint:
    """A point as a backup holds it: id, vector and payload."""

    concern: Concern
    id: str
    vector: list[float]
    payload: dict[str, Any] = field(default_factory=dict)


class VectorMemory:
    """Remember, recall and forget texts per tenant, on Qdrant."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        embedder: Embedder,
        *,
        prefix: str = "troupe",
        local: bool,
        max_chars: int = 4000,
    ) -> None:
        self._client = client
        self._embedder = embedder
        self._prefix = prefix
        self._local = local
        self._max_chars = max_chars

    @classmethod
    async def open(
        cls, settings: MemorySettings, embedder: Embedder, data_dir: Path
    ) -> VectorMemory:
        """Connect (or open the local directory) and create missing collections.

        ConfigError when the local directory is held by another process, or a
        collection holds vectors of another size than the embedder gives.
        """
        # Imported on use: qdrant-client costs ~1.5 s of start-up.
        from qdrant_client import AsyncQdrantClient

        from troupe.llm.secrets import env_secret

        if settings.qdrant_url is None:
            path = data_dir / "qdrant"
            path.mkdir(parents=True, exist_ok=True)
            _require_unlocked(path)
            client = AsyncQdrantClient(path=str(path))
        else:
            key = env_secret(settings.qdrant_api_key_env)
            client = AsyncQdrantClient(
                url=settings.qdrant_url, api_key=key.get_secret_value() if key else None
            )
        memory = cls(
            client,
            embedder,
            prefix=settings.collection_prefix,
            local=settings.qdrant_url is None,
            max_chars=settings.max_chars,
        )
        try:
            await memory.ensure_collections()
        except BaseException:
            await client.close()
            raise
        return memory

    def collection(self, concern: Concern) -> str:
        return f"{self._prefix}_{concern.value}"

    async def ensure_collections(self) -> None:
        from qdrant_client import models

        for concern in Concern:
            name = self.collection(concern)
            if await self._client.collection_exists(name):
                info = await self._client.get_collection(name)
                vectors = info.config.params.vectors
                size = vectors.size if isinstance(vectors, models.VectorParams) else None
                if size != self._embedder.dimensions:
                    raise ConfigError(
                        f"Qdrant collection {name} holds vectors of {size} dimensions; the "
                        f"embedder {self._embedder.name} gives {self._embedder.dimensions}. "
                        "Use another memory.collection_prefix, or the embedder it was "
                        "built with"
                    )
                continue
            await self._client.create_collection(
                name,
                vectors_config=models.VectorParams(
                    size=self._embedder.dimensions, distance=models.Distance.COSINE
                ),
            )
            if not self._local:  # local mode has no payload indexes (and warns)
                await self._client.create_payload_index(
                    name,
                    "tenant_id",
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                )
                await self._client.create_payload_index(
                    name, "session_id", models.PayloadSchemaType.KEYWORD
                )

    async def remember(
        self,
        tenant_id: str,
        concern: Concern,
        text: str,
        *,
        key: str,
        session_id: str | None = None,
        task_id: str | None = None,
        title: str | None = None,
    ) -> Memory:
        """Store ``text`` (cut to ``memory.max_chars``) under ``key``: the same key again
        replaces it."""
        from qdrant_client import models

        memory = Memory(
            id=str(uuid.uuid5(_ID_NAMESPACE, f"{tenant_id}\x00{concern.value}\x00{key}")),
            concern=concern,
            tenant_id=tenant_id,
            text=text[: self._max_chars],
            created_at=datetime.now(UTC),
            session_id=session_id,
            task_id=task_id,
            title=title,
        )
        (vector,) = await self._embedder.embed([_embedded_text(memory)])
        await self._client.upsert(
            self.collection(concern),
            [models.PointStruct(id=memory.id, vector=vector, payload=_payload(memory))],
        )
        return memory

    async def recall(
        self,
        tenant_id: str,
        query: str,
        *,
        concerns: Iterable[Concern] = tuple(Concern),
        session_id: str | None = None,
        limit: int = 4,
        min_score: float = 0.0,
        exclude_tasks: Sequence[str] = (),
    ) -> list[Recalled]:
        """The tenant's memories closest to ``query``, best first. Session memories are
        searched only with a ``session_id``, and only that session's."""
        if limit <= 0 or not query.strip():
            return []
        (vector,) = await self._embedder.embed([query])
        found: list[Recalled] = []
        for concern in concerns:
            if concern is Concern.SESSION and session_id is None:
                continue
            scope = session_id if concern is Concern.SESSION else None
            answer = await self._client.query_points(
                self.collection(concern),
                query=vector,
                query_filter=_tenant_filter(tenant_id, session_id=scope, exclude=exclude_tasks),
                limit=limit,
                score_threshold=min_score,
                with_payload=True,
            )
            found += [
                Recalled(memory=_memory(concern, str(p.id), p.payload or {}), score=p.score)
                for p in answer.points
            ]
        found.sort(key=lambda r: r.score, reverse=True)
        return found[:limit]

    async def get(self, tenant_id: str, concern: Concern, memory_id: str) -> Memory:
        """One of the tenant's memories; NotFound for another tenant's or none."""
        try:
            uuid.UUID(memory_id)
        except ValueError:
            raise NotFound(f"memory {memory_id} not found", code="memory_not_found") from None
        points = await self._client.retrieve(self.collection(concern), [memory_id])
        if not points or (points[0].payload or {}).get("tenant_id") != tenant_id:
            raise NotFound(f"memory {memory_id} not found", code="memory_not_found")
        return _memory(concern, str(points[0].id), points[0].payload or {})

    async def browse(
        self, tenant_id: str, concern: Concern, *, limit: int = 50, session_id: str | None = None
    ) -> list[Memory]:
        """Up to ``limit`` of the tenant's memories of one concern (in id order)."""
        points, _ = await self._client.scroll(
            self.collection(concern),
            scroll_filter=_tenant_filter(tenant_id, session_id=session_id),
            limit=limit,
            with_payload=True,
        )
        return [_memory(concern, str(p.id), p.payload or {}) for p in points]

    async def forget(
        self,
        tenant_id: str,
        concern: Concern,
        *,
        memory_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """Delete one memory (``memory_id``), or all of a session's, of the tenant."""
        from qdrant_client import models

        if memory_id is not None:
            await self.get(tenant_id, concern, memory_id)  # NotFound across tenants
            selector: Any = models.PointIdsList(points=[memory_id])
        else:
            selector = models.FilterSelector(
                filter=_tenant_filter(tenant_id, session_id=session_id)
            )
        await self._client.delete(self.collection(concern), points_selector=selector)

    async def count(self, tenant_id: str | None = None) -> dict[Concern, int]:
        """Points per concern: of one tenant, or of all."""
        query_filter = _tenant_filter(tenant_id) if tenant_id is not None else None
        counts = {}
        for concern in Concern:
            answer = await self._client.count(
                self.collection(concern), count_filter=query_filter, exact=True
            )
            counts[concern] = answer.count
        return counts

    async def export(self) -> AsyncIterator[list[ExportedPoint]]:
        """Every point of every concern, with its vector, a page at a time (backups)."""
        for concern in Concern:
            offset: Any = None
            while True:
                points, offset = await self._client.scroll(
                    self.collection(concern),
                    limit=_EXPORT_PAGE,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
                yield [
                    ExportedPoint(
                        concern=concern,
                        id=str(p.id),
                        vector=_dense(p.vector),
                        payload=dict(p.payload or {}),
                    )
                    for p in points
                ]
                if offset is None:
                    break

    async def restore(self, points: Sequence[ExportedPoint]) -> None:
        """Write exported points back as they were (restores)."""
        from qdrant_client import models

        for concern in Concern:
            mine = [p for p in points if p.concern is concern]
            if mine:
                await self._client.upsert(
                    self.collection(concern),
                    [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in mine],
                )

    async def aclose(self) -> None:
        await self._client.close()
        await self._embedder.aclose()


def _require_unlocked(path: Path) -> None:
    """ConfigError when another client holds the local directory. Asked first because
    qdrant-client, refused, leaks the lock file's handle."""
    lock = path / ".lock"
    lock.touch()
    with lock.open("rb+") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"the vector memory in {path} is open in another process (Qdrant local "
                "mode allows one): stop it, or set memory.qdrant_url to a Qdrant server"
            ) from None
        fcntl.flock(held, fcntl.LOCK_UN)


def _dense(vector: object) -> list[float]:
    """The one unnamed dense vector every collection here holds."""
    if not isinstance(vector, list) or not all(isinstance(x, float | int) for x in vector):
        raise TypeError(f"expected a dense vector, got {type(vector).__name__}")
    return [float(x) for x in vector]


def _embedded_text(memory: Memory) -> str:
    return f"{memory.title}\n{memory.text}" if memory.title else memory.text


def _payload(memory: Memory) -> dict[str, Any]:
    return {
        "tenant_id": memory.tenant_id,
        "text": memory.text,
        "created_at": memory.created_at.isoformat(),
        "session_id": memory.session_id,
        "task_id": memory.task_id,
        "title": memory.title,
    }


def _memory(concern: Concern, point_id: str, payload: dict[str, Any]) -> Memory:
    return Memory(
        id=point_id,
        concern=concern,
        tenant_id=payload["tenant_id"],
        text=payload.get("text", ""),
        created_at=datetime.fromisoformat(payload["created_at"]),
        session_id=payload.get("session_id"),
        task_id=payload.get("task_id"),
        title=payload.get("title"),
    )


def _tenant_filter(
    tenant_id: str, *, session_id: str | None = None, exclude: Sequence[str] = ()
) -> Filter:
    from qdrant_client import models

    must: list[Any] = [
        models.FieldCondition(key="tenant_id", match=models.MatchValue(value=tenant_id))
    ]
    if session_id is not None:
        must.append(
            models.FieldCondition(key="session_id", match=models.MatchValue(value=session_id))
        )
    must_not: list[Any] = []
    if exclude:
        must_not.append(
            models.FieldCondition(key="task_id", match=models.MatchAny(any=list(exclude)))
        )
    return models.Filter(must=must, must_not=must_not or None)
