"""memory_search: an agent looks up what its tenant remembered before.

Searches the calling task's tenant only: its session's earlier turns, results of
earlier tasks and documents users saved (``storage/vectors.py``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from troupe.storage.vectors import Concern, VectorMemory
from troupe.tools.base import ToolCaller, ToolError, ToolOutput, TypedTool

Scope = Literal["all", "session", "tasks", "documents"]


class MemorySearchArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=1000, description="What to look for")
    scope: Scope = Field(
        default="all",
        description="session: this conversation's earlier turns; tasks: earlier tasks' "
        "results; documents: texts users saved; all: every one",
    )
    limit: int = Field(default=4, ge=1, le=10)


class MemorySearch(TypedTool):
    """Semantic search over the calling tenant's memory."""

    name = "memory_search"
    description = (
        "Search what was remembered before (earlier turns of this conversation, results "
        "of earlier tasks, documents users saved) for text relevant to a query."
    )
    arguments = MemorySearchArguments
    needs_caller: ClassVar[bool] = True

    def __init__(self, memory: VectorMemory, *, min_score: float) -> None:
        self._memory = memory
        self._min_score = min_score

    async def run(self, arguments: BaseModel) -> ToolOutput:
        raise ToolError("memory_search answers only within a task")

    async def run_for(self, arguments: BaseModel, caller: ToolCaller) -> ToolOutput:
        assert isinstance(arguments, MemorySearchArguments)
        concerns = list(Concern) if arguments.scope == "all" else [Concern(arguments.scope)]
        found = await self._memory.recall(
            caller.tenant_id,
            arguments.query,
            concerns=concerns,
            session_id=caller.session_id,
            limit=arguments.limit,
            min_score=self._min_score,
            exclude_tasks=[caller.task_id],
        )
        if not found:
            return ToolOutput(text="no memory matches", confidence=0.5)
        lines = [
            f"{n}. [{r.memory.concern.value} {r.memory.created_at:%Y-%m-%d} score "
            f"{r.score:.2f}] {r.memory.title + ': ' if r.memory.title else ''}{r.memory.text}"
            for n, r in enumerate(found, 1)
        ]
        # Memories are earlier outputs, not verified facts.
        return ToolOutput(text="\n".join(lines), confidence=0.6)
