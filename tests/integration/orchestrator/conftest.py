"""Fixtures of the orchestrator tests."""

import pytest

from tests.integration.orchestrator.rig import rig

__all__ = ["both_activity_kinds", "rig"]

# Agent steps run as local activities by default and as regular ones when
# orchestrator.local_activities is off: tests of retries, failures and cancellation
# run both ways.
both_activity_kinds = pytest.mark.parametrize(
    "local_activities", [True, False], ids=["local", "regular"]
)
