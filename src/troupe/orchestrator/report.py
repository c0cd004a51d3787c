"""The consistency report of a replay (plain models: clients read it without Temporal)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class NodeComparison(BaseModel):
    node_id: str
    in_history: bool
    in_storage: bool
    equal: bool | None = Field(description="None when there was nothing stored to compare.")
    history_digest: str | None = Field(description="sha256 prefix of the recorded output.")
    stored_digest: str | None


class ReplayReport(BaseModel):
    """The consistency report of one replay."""

    workflow_id: str
    run_id: str
    events: int
    deterministic: bool
    replay_error: str | None = None
    result_equal: bool | None = Field(
        default=None, description="History's final answer equals storage's; None if unknown."
    )
    nodes: list[NodeComparison] = Field(default_factory=list)
    first_divergence: str | None = None

    @property
    def consistent(self) -> bool:
        return self.first_divergence is None

    def text(self) -> str:
        """The report for humans."""
        lines = [
            f"workflow {self.workflow_id} (run {self.run_id}), {self.events} history events",
            f"determinism: {'OK' if self.deterministic else 'FAILED'}"
            + (f" ({self.replay_error})" if self.replay_error else ""),
        ]
        if self.result_equal is not None:
            lines.append(f"final answer: {'equal' if self.result_equal else 'DIFFERENT'}")
        for node in self.nodes:
            if node.equal is None:
                where = f"recorded ({node.history_digest})"
            elif node.equal:
                where = "equal"
            elif not node.in_storage:
                where = "only in history"
            elif not node.in_history:
                where = "only in storage"
            else:
                where = "DIFFERENT"
            lines.append(f"  node {node.node_id}: {where}")
        lines.append(
            "verdict: consistent"
            if self.consistent
            else f"verdict: DIVERGED at {self.first_divergence}"
        )
        return "\n".join(lines)
