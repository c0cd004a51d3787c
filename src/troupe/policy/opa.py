"""A remote OPA server, over its Data API: ``POST /v1/data/troupe/authz/decision``
with ``{"input": ...}`` answers ``{"result": {...}}`` (no ``result``: undefined, which
denies). The server loads the same policies/*.rego and data.json."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from troupe.policy.base import Action, Decision, policy_input

logger = logging.getLogger(__name__)

_PATH = "/v1/data/troupe/authz/decision"


class OpaHttpEngine:
    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s)
        self._version = "opa"

    @property
    def version(self) -> str:
        return self._version

    async def decide(self, action: Action, input: dict[str, Any]) -> Decision:
        try:
            response = await self._http.post(_PATH, json={"input": policy_input(action, input)})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.error("OPA at %s failed for %s: %s", self._http.base_url, action, exc)
            return Decision(False, "the policy server could not be asked", False, self.version)
        # OPA names what answered when asked to (provenance); else the decision id.
        self._version = str(body.get("provenance", {}).get("revision") or "opa")
        return Decision.of(body.get("result"), self.version)

    async def aclose(self) -> None:
        await self._http.aclose()
