"""Fixtures of the orchestrator tests."""

from tests.integration.orchestrator.rig import rig

__all__ = ["rig"]
