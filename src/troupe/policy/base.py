"""The policy interface: one decision document per action.

Every engine answers ``decide(action, input)`` with the same document the policy
writes at ``data.troupe.authz.decision``: ``{"allow", "reason", "require_approval"}``.
The input is ``{"action": ..., **input}``; its schema is in docs/policies.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from troupe.errors import Forbidden

Action = Literal["task.submit", "session.access", "tool.invoke", "model.use"]

# Where every engine reads the decision document.
DECISION_PATH = "data.troupe.authz.decision"


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str
    require_approval: bool
    policy_version: str

    @classmethod
    def of(cls, document: Any, version: str) -> Decision:
        """A decision from the policy's document; anything malformed denies."""
        if not isinstance(document, dict) or not isinstance(document.get("allow"), bool):
            return cls(False, "the policy gave no decision for this input", False, version)
        reason = document.get("reason")
        return cls(
            allow=document["allow"],
            reason=reason if isinstance(reason, str) and reason else "no reason given",
            require_approval=document.get("require_approval") is True,
            policy_version=version,
        )


class PolicyDenied(Forbidden):
    """The policy said no; ``message`` is its reason."""

    code = "policy_denied"

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"{action} denied by policy: {reason}")
        self.action = action
        self.reason = reason


class PolicyEngine(Protocol):
    async def decide(self, action: Action, input: dict[str, Any]) -> Decision:
        """The policy's decision; a broken or unreachable policy denies."""

    @property
    def version(self) -> str:
        """What identifies the policy in force (a digest of its files)."""

    async def aclose(self) -> None: ...


def policy_input(action: Action, input: dict[str, Any]) -> dict[str, Any]:
    return {"action": action, **input}


def input_digest(document: dict[str, Any]) -> str:
    """A SHA-256 of the canonical JSON of an input: what the decision log keeps."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
