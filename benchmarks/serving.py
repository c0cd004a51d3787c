"""A `troupe serve` child process for the benchmarks (shared by the scripts here).

:class:`ServeProcess` starts `troupe serve` (API + worker + embedded Temporal in one
process) with a fresh temporary data dir, a free loopback port and every inherited
``TROUPE_*`` variable removed, in its own process group with output to a log file; it
polls ``/readyz`` until the first 200 and stops the server with SIGTERM, reporting a
server that does not exit cleanly or leaves a process of its group behind.

Also here, for the task benchmarks: :func:`run_workers` (K asyncio workers that each
take the next task until all have been submitted), :func:`span_ms` (a task's span as
stored by the server) and :func:`shutdown_line` (how the stop is reported).

The scripts are run as ``python benchmarks/X.py``, which puts this directory first on
``sys.path``, so they import this module as plain ``serving``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TypeVar

import httpx

from troupe.auth.dev import read_dev_key

REPO_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class BenchError(Exception):
    """The server (or a task) misbehaved; the message says exactly what was seen."""


@dataclass
class Readiness:
    first_answer: float  # perf_counter() of the first HTTP answer from /readyz (any status)
    ready: float  # perf_counter() of the first 200
    not_ready_answers: int  # 503s (or other non-200s) seen before it


@dataclass
class Shutdown:
    seconds: float | None  # SIGTERM → exit; None when it had to be killed or was gone
    returncode: int | None
    problem: str | None  # anything other than a clean exit, verbatim


def shutdown_line(seconds: float | None, exit_code: int | None) -> str:
    """The line "shutdown: SIGTERM → exit in X s, exit code N" that the scripts print."""
    return (
        "shutdown: SIGTERM → exit "
        + (f"in {seconds:.2f} s" if seconds is not None else "not measured")
        + f", exit code {exit_code}"
    )


def span_ms(start: datetime, end: datetime | None) -> float | None:
    """``start`` → ``end`` in ms (a task's ``created_at`` → ``finished_at``); None: no end."""
    return None if end is None else (end - start).total_seconds() * 1000


async def run_workers(
    first: int, count: int, workers: int, job: Callable[[int], Awaitable[T]]
) -> list[T]:
    """``job(index)`` for ``first`` ... ``first + count - 1``, by ``workers`` asyncio
    workers that each take the next index until none is left, so that up to ``workers``
    jobs are in flight. Results in the order the jobs finished.

    A :class:`BenchError` from a job cancels the others and is raised as itself.
    """
    results: list[T] = []
    indices = iter(range(first, first + count))

    async def worker() -> None:
        for index in indices:
            results.append(await job(index))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(workers, count)):
                group.create_task(worker())
    except* BenchError as errors:
        raise errors.exceptions[0] from None
    return results


def exit_on_sigterm() -> None:
    """Turn SIGTERM to the benchmark into ``SystemExit``, so that the ``finally`` that
    stops the server still runs (as it does for Ctrl-C)."""
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the server


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _troupe_script() -> Path:
    script = Path(sys.executable).parent / "troupe"
    if not script.exists():
        raise BenchError(f"{script} not found: run this with the project's venv python")
    return script


def _group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes in process group ``pgid``, as "pid name" (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        name = text[text.find("(") + 1 : text.rfind(")")]
        state, _ppid, pgrp = text[text.rfind(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(f"{stat.parent.name} {name}")
    return members


class ServeProcess:
    """One `troupe serve` child in its own session, state in a fresh temp dir.

    ``settings`` are extra ``TROUPE_*`` variables for the child, on top of the data dir,
    host and port. Use: :meth:`launch`, :meth:`wait_ready`, then always (in a
    ``finally``) :meth:`stop` and :meth:`cleanup`.
    """

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="troupe-bench-")
        root = Path(self._scratch.name)
        self.data_dir = root / "data"
        self.log_path = root / "serve.log"
        self.port = _free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.settings = dict(settings or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.dropped_env: list[str] = []  # inherited TROUPE_* names not passed on

    @property
    def api_key(self) -> str:
        """The embedded dev tenant's key, which `troupe serve` makes on start."""
        key = read_dev_key(self.data_dir)
        if key is None:
            raise RuntimeError(f"troupe serve wrote no dev key in {self.data_dir}")
        return key

    def _env(self) -> dict[str, str]:
        # A launcher must hand the caller's environment on (PATH, HOME, ...); inherited
        # TROUPE_* settings are dropped so that every run sees the same configuration.
        inherited = dict(os.environ)  # noqa: TID251 - passing the environment to a child
        self.dropped_env = sorted(k for k in inherited if k.startswith("TROUPE_"))
        env = {k: v for k, v in inherited.items() if not k.startswith("TROUPE_")}
        env.update(
            TROUPE_DATA_DIR=str(self.data_dir),
            TROUPE_SERVER__HOST="127.0.0.1",
            TROUPE_SERVER__PORT=str(self.port),
        )
        env.update(self.settings)
        return env

    def launch(self) -> float:
        """Start the child (cwd = repo root, so config/multi-agent.yaml applies).

        Returns the perf_counter() taken just before ``Popen``.
        """
        args = [str(_troupe_script()), "serve"]
        env = self._env()
        with self.log_path.open("wb") as log:
            began = time.perf_counter()
            self.process = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: nothing can be left behind
            )
        return began

    def wait_ready(self, *, timeout_s: float, poll_s: float = 0.01) -> Readiness:
        """Poll /readyz until the first 200, noting when any HTTP answer first came."""
        assert self.process is not None
        deadline = time.perf_counter() + timeout_s
        first_answer: float | None = None
        not_ready = 0
        last = "no answer yet (connection refused)"
        # An explicit transport: no proxy from the environment, straight to 127.0.0.1.
        with httpx.Client(transport=httpx.HTTPTransport(), timeout=2.0) as http:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise BenchError(
                        f"troupe serve exited with code {self.process.returncode} before "
                        "/readyz answered 200"
                    )
                try:
                    response = http.get(f"{self.base_url}/readyz")
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    now = time.perf_counter()
                    first_answer = first_answer or now
                    if response.status_code == 200:
                        return Readiness(first_answer, now, not_ready)
                    not_ready += 1
                    last = f"{response.status_code} {response.text[:300]}"
                time.sleep(poll_s)
        raise BenchError(f"/readyz did not answer 200 within {timeout_s:g} s; last: {last}")

    def stop(self, *, timeout_s: float = 30.0) -> Shutdown:
        """SIGTERM and wait; a child that does not exit is reported, then killed."""
        process = self.process
        if process is None:
            return Shutdown(None, None, "never started")
        problems = []
        seconds: float | None = None
        if process.poll() is not None:
            problems.append(f"had already exited with code {process.returncode}")
        else:
            began = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
                seconds = time.perf_counter() - began
            except subprocess.TimeoutExpired:
                problems.append(f"did not exit within {timeout_s:g} s of SIGTERM; killed")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.returncode != 0 and not problems:
            problems.append(f"exited with code {process.returncode} after SIGTERM")
        leftovers = self._reap_group(process.pid)
        if leftovers:
            problems.append(f"left processes behind (killed): {', '.join(leftovers)}")
        return Shutdown(seconds, process.returncode, "; ".join(problems) or None)

    @staticmethod
    def _reap_group(pgid: int, grace_s: float = 5.0) -> list[str]:
        """Wait for the group to empty; kill and return whatever is still alive."""
        deadline = time.perf_counter() + grace_s
        members = _group_members(pgid)
        while members and time.perf_counter() < deadline:
            time.sleep(0.05)
            members = _group_members(pgid)
        if members:
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        return members

    def log_text(self) -> str:
        """Everything the server wrote so far (stdout and stderr); "" once cleaned up."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's output, under a header line."""
        tail = self.log_text().splitlines()[-lines:]
        return "--- last lines of troupe serve output ---\n" + "\n".join(tail)

    def cleanup(self) -> None:
        """Delete the temp dir (data dir and log); call after :meth:`stop`."""
        self._scratch.cleanup()
