"""Workers run workflow code plainly unless asked for the sandbox (the tests ask)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from troupe.config import load_settings
from troupe.orchestrator.worker import _workflow_runner

pytestmark = pytest.mark.unit


def test_the_sandbox_is_off_by_default_and_on_when_asked(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=str(tmp_path))
    assert settings.orchestrator.workflow_sandbox is False
    assert isinstance(_workflow_runner(False), UnsandboxedWorkflowRunner)
    sandboxed = _workflow_runner(True)
    assert isinstance(sandboxed, SandboxedWorkflowRunner)
    # Passed through: the workflow modules are not imported again for every run.
    assert sandboxed.restrictions.passthrough_all_modules
