"""python_exec: run Python in the WASI sandbox and read what it printed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from troupe.sandbox.runner import Sandbox, SandboxResult
from troupe.tools.base import ToolOutput, TypedTool


class PythonExecArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        min_length=1,
        description="Python 3.12 source, run as a script; print what you need to see.",
    )


class PythonExec(TypedTool):
    """Untrusted code, so only ever in the sandbox: no network, no host files."""

    name = "python_exec"
    description = (
        "Run a short Python 3.12 script in an isolated sandbox (no network, no files but "
        "its own scratch directory, limited memory and time) and get its exit code, "
        "stdout and stderr."
    )
    arguments = PythonExecArguments
    sandboxed = True

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def run(self, arguments: BaseModel) -> ToolOutput:
        assert isinstance(arguments, PythonExecArguments)
        result = await self._sandbox.run(arguments.code)
        # What a script printed is as good as the script: trusted when it ran cleanly.
        return ToolOutput(
            text=render(result),
            ok=result.ok,
            confidence=0.9 if result.ok else 0,
            fuel=result.fuel_used,
        )


def render(result: SandboxResult) -> str:
    """What the agent reads of a run."""
    head = f"exit code {result.exit_code}"
    if result.killed:
        head += f", stopped: {result.killed}"
    parts = [head]
    if result.stdout:
        parts.append("stdout:\n" + result.stdout + ("… [cut]" if result.stdout_truncated else ""))
    if result.stderr:
        parts.append("stderr:\n" + result.stderr + ("… [cut]" if result.stderr_truncated else ""))
    return "\n".join(parts)
