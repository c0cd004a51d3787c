"""Submit → result latency of simple tasks on a real `troupe serve`.

Starts `troupe serve` (API + worker + embedded Temporal in one process) as a child
process with a fresh temporary data dir, a free loopback port and zero simulated LLM
latency, waits for ``/readyz``, runs a few untimed warm-up tasks, then submits N tasks
through :mod:`troupe.client` and times each one from just before ``submit_task`` until
``wait(task_id)`` returns (it follows the task's SSE stream to the terminal event, then
reads the final task). With ``--concurrency 1`` the blocking ``TroupeClient`` runs one
task at a time; with ``--concurrency K`` the ``AsyncTroupeClient`` keeps K tasks in
flight until N have been submitted.

Percentiles: ``statistics.quantiles(data, n=100, method="inclusive")``, i.e. linear
interpolation between the closest ranks of the sorted sample (p50 of the cut points is
the median). The server is always stopped with SIGTERM and waited for.

    .venv/bin/python benchmarks/simple_task_latency.py [--tasks 50] [--concurrency 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from troupe.client import AsyncTroupeClient, TroupeAPIError, TroupeClient

REPO_ROOT = Path(__file__).resolve().parent.parent
PERCENTILE_METHOD = 'statistics.quantiles(data, n=100, method="inclusive")'
TARGET_P50_MS = 100.0  # concurrency 1 only
TARGET_P99_MS = 150.0  # concurrency 1 only
QUERY = "Summarise the trade-offs of event sourcing (benchmark task {index})"


class BenchError(Exception):
    """The server or a task misbehaved; the message says exactly what was seen."""


class DeadlineExceeded(BaseException):
    """Raised by SIGALRM. A BaseException, so that no library retry loop swallows it."""


# --------------------------------------------------------------------------- server


@dataclass
class Shutdown:
    seconds: float | None  # SIGTERM → exit; None when it had to be killed or was gone
    returncode: int | None
    problem: str | None  # anything other than a clean exit, verbatim


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
    """One `troupe serve` child in its own session, state in a fresh temp dir."""

    def __init__(self, *, latency_ms: int) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="troupe-bench-")
        root = Path(self._scratch.name)
        self.data_dir = root / "data"
        self.log_path = root / "serve.log"
        self.port = _free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.latency_ms = latency_ms
        self.process: subprocess.Popen[bytes] | None = None
        self.dropped_env: list[str] = []

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
            TROUPE_LLM__SIMULATION__LATENCY_MS=str(self.latency_ms),
            TROUPE_LLM__SIMULATION__FAILURE_RATE="0",
        )
        return env

    def launch(self) -> float:
        """Start the child (cwd = repo root, so config/multi-agent.yaml applies)."""
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

    def wait_ready(self, *, timeout_s: float, poll_s: float = 0.01) -> float:
        """Poll /readyz until the first 200; return the perf_counter() of that answer."""
        assert self.process is not None
        deadline = time.perf_counter() + timeout_s
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
                    if response.status_code == 200:
                        return time.perf_counter()
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
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "--- last lines of troupe serve output ---\n" + "\n".join(tail)

    def cleanup(self) -> None:
        self._scratch.cleanup()


# --------------------------------------------------------------------------- tasks


@dataclass
class Sample:
    task_id: str
    status: str
    wall_ms: float  # submit_task() called → wait() returned
    server_ms: float | None  # task created_at → finished_at, as stored by the server


def _span_ms(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds() * 1000


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _stuck_message(task_id: str | None, timeout_s: float, state: str) -> str:
    if task_id is None:
        return f"submit_task did not answer within {timeout_s:g} s"
    return (
        f"task {task_id} did not reach a terminal event within {timeout_s:g} s "
        f"(server says: {state})"
    )


def _api_failure(task_id: str | None, exc: Exception) -> str:
    what = f"task {task_id}" if task_id else "submit_task"
    return f"{what} failed: {type(exc).__name__}: {exc}"


def _run_one_sync(client: TroupeClient, index: int, timeout_s: float) -> Sample:
    task_id: str | None = None
    began = time.perf_counter()
    try:
        with _deadline(timeout_s):
            task_id = client.submit_task(QUERY.format(index=index)).id
            final = client.wait(task_id)
    except DeadlineExceeded:
        state = "?"
        if task_id is not None:
            try:
                with _deadline(5.0):
                    state = f"status {client.get_task(task_id).status}"
            except (Exception, DeadlineExceeded) as exc:
                state = f"could not read the task: {type(exc).__name__}"
        raise BenchError(_stuck_message(task_id, timeout_s, state)) from None
    except (TroupeAPIError, httpx.HTTPError) as exc:
        raise BenchError(_api_failure(task_id, exc)) from exc
    wall_ms = (time.perf_counter() - began) * 1000
    return Sample(
        task_id, str(final.status), wall_ms, _span_ms(final.created_at, final.finished_at)
    )


def run_sequential(base_url: str, first: int, count: int, timeout_s: float) -> list[Sample]:
    with TroupeClient(base_url, transport=httpx.HTTPTransport()) as client:
        return [_run_one_sync(client, first + i, timeout_s) for i in range(count)]


async def _run_one_async(client: AsyncTroupeClient, index: int, timeout_s: float) -> Sample:
    task_id: str | None = None
    began = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            task_id = (await client.submit_task(QUERY.format(index=index))).id
            final = await client.wait(task_id)
    except TimeoutError:
        state = "?"
        if task_id is not None:
            try:
                async with asyncio.timeout(5.0):
                    state = f"status {(await client.get_task(task_id)).status}"
            except Exception as exc:
                state = f"could not read the task: {type(exc).__name__}"
        raise BenchError(_stuck_message(task_id, timeout_s, state)) from None
    except (TroupeAPIError, httpx.HTTPError) as exc:
        raise BenchError(_api_failure(task_id, exc)) from exc
    wall_ms = (time.perf_counter() - began) * 1000
    return Sample(
        task_id, str(final.status), wall_ms, _span_ms(final.created_at, final.finished_at)
    )


async def _run_concurrent(
    base_url: str, first: int, count: int, concurrency: int, timeout_s: float
) -> list[Sample]:
    """K workers share one client; each takes the next task until ``count`` are done."""
    samples: list[Sample] = []
    indices = iter(range(first, first + count))
    async with AsyncTroupeClient(base_url, transport=httpx.AsyncHTTPTransport()) as client:

        async def worker() -> None:
            for index in indices:
                samples.append(await _run_one_async(client, index, timeout_s))

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, count)):
                    group.create_task(worker())
        except* BenchError as errors:
            raise errors.exceptions[0] from None
    return samples


def run_concurrent(
    base_url: str, first: int, count: int, concurrency: int, timeout_s: float
) -> list[Sample]:
    return asyncio.run(_run_concurrent(base_url, first, count, concurrency, timeout_s))


# --------------------------------------------------------------------------- report


def summarize(values: list[float]) -> dict[str, float]:
    """min/median/p90/p99/max/mean; percentiles per PERCENTILE_METHOD."""
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    )
    return {
        "min": min(values),
        "median": cuts[49],
        "p90": cuts[89],
        "p99": cuts[98],
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def _verdict(value: float, target: float) -> str:
    return "ok" if value < target else "MISSED"


def build_report(
    args: argparse.Namespace,
    samples: list[Sample],
    elapsed_s: float,
    ready_s: float,
    shutdown: Shutdown,
) -> dict[str, Any]:
    latency = summarize([s.wall_ms for s in samples])
    spans = [s.server_ms for s in samples if s.server_ms is not None]
    statuses: dict[str, int] = {}
    for sample in samples:
        statuses[sample.status] = statuses.get(sample.status, 0) + 1
    targeted = args.concurrency == 1
    return {
        "benchmark": "simple_task_latency",
        "tasks": len(samples),
        "concurrency": args.concurrency,
        "warmup_tasks": args.warmup,
        "simulation_latency_ms": args.latency_ms,
        "percentile_method": PERCENTILE_METHOD,
        "latency_ms": latency,
        "server_span_ms": summarize(spans) if spans else None,
        "throughput_tasks_per_s": len(samples) / elapsed_s,
        "statuses": statuses,
        "targets_ms": {"p50": TARGET_P50_MS, "p99": TARGET_P99_MS} if targeted else None,
        "meets_targets": (
            latency["median"] < TARGET_P50_MS and latency["p99"] < TARGET_P99_MS
            if targeted
            else None
        ),
        "ready_s": ready_s,
        "shutdown_s": shutdown.seconds,
        "shutdown_exit_code": shutdown.returncode,
        "shutdown_problem": shutdown.problem,
    }


def print_report(report: dict[str, Any]) -> None:
    latency = report["latency_ms"]
    targets = report["targets_ms"]
    print(
        f"simple_task_latency: {report['tasks']} tasks, concurrency {report['concurrency']}, "
        f"{report['warmup_tasks']} warm-up, simulated LLM latency "
        f"{report['simulation_latency_ms']} ms"
    )
    print(f"troupe serve ready in {report['ready_s']:.2f} s (launch → first 200 from /readyz)")
    print(f"submit → result wall time, ms (percentiles: {report['percentile_method']})")
    rows = [
        ("median", latency["median"], targets["p50"] if targets else None),
        ("p90", latency["p90"], None),
        ("p99", latency["p99"], targets["p99"] if targets else None),
        ("max", latency["max"], None),
    ]
    for name, value, target in rows:
        line = f"  {name:<7}{value:9.1f}"
        if target is not None:
            line += f"   target < {target:.0f}  {_verdict(value, target)}"
        print(line)
    print(f"  min    {latency['min']:9.1f}   mean {latency['mean']:.1f}")
    if targets is None:
        print(
            f"  (targets p50 < {TARGET_P50_MS:.0f} ms, p99 < {TARGET_P99_MS:.0f} ms "
            "apply to concurrency 1)"
        )
    span = report["server_span_ms"]
    if span:
        print(
            f"server created_at → finished_at, ms: median {span['median']:.1f}  "
            f"p90 {span['p90']:.1f}  p99 {span['p99']:.1f}  max {span['max']:.1f}"
        )
    print(f"throughput: {report['throughput_tasks_per_s']:.1f} tasks/s")
    print("statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(report["statuses"].items())))
    shutdown = report["shutdown_s"]
    print(
        "shutdown: SIGTERM → exit "
        + (f"in {shutdown:.2f} s" if shutdown is not None else "not measured")
        + f", exit code {report['shutdown_exit_code']}"
    )
    if report["shutdown_problem"]:
        print(f"shutdown PROBLEM: {report['shutdown_problem']}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=50, help="measured tasks (default 50)")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="tasks in flight at once (default 1)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed warm-up tasks at the same concurrency (default max(5, concurrency))",
    )
    parser.add_argument(
        "--latency-ms", type=int, default=0, help="simulated LLM latency per call (default 0)"
    )
    parser.add_argument("--task-timeout", type=float, default=30.0, help="seconds per task")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to /readyz")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.concurrency < 1:
        parser.error("--tasks and --concurrency must be at least 1")
    if args.warmup is None:
        args.warmup = max(5, args.concurrency)
    return args


def _run(args: argparse.Namespace, base_url: str, first: int, count: int) -> list[Sample]:
    if args.concurrency == 1:
        return run_sequential(base_url, first, count, args.task_timeout)
    return run_concurrent(base_url, first, count, args.concurrency, args.task_timeout)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the server


@dataclass
class Measured:
    ready_s: float
    samples: list[Sample]
    elapsed_s: float


def measure(
    args: argparse.Namespace, server: ServeProcess, note: Callable[[str], None]
) -> Measured:
    launched = server.launch()
    if server.dropped_env:
        note(f"(not passed to troupe serve: {', '.join(server.dropped_env)})")
    ready_s = server.wait_ready(timeout_s=args.ready_timeout) - launched
    note(f"troupe serve ready at {server.base_url} after {ready_s:.2f} s; warming up")
    if args.warmup:
        _run(args, server.base_url, 0, args.warmup)
    note(f"measuring {args.tasks} tasks at concurrency {args.concurrency}")
    began = time.perf_counter()
    samples = _run(args, server.base_url, args.warmup, args.tasks)
    elapsed_s = time.perf_counter() - began
    assert server.process is not None
    if server.process.poll() is not None:
        raise BenchError(
            f"troupe serve exited with code {server.process.returncode} during the run"
        )
    return Measured(ready_s, samples, elapsed_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    def note(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    server = ServeProcess(latency_ms=args.latency_ms)
    measured: Measured | None = None
    aborted: BenchError | None = None
    try:
        measured = measure(args, server, note)
    except BenchError as exc:
        aborted = exc
    finally:
        shutdown = server.stop()  # always: SIGTERM, wait, report anything left behind
        log_tail = server.log_tail()
        server.cleanup()

    if measured is None:
        print(f"benchmark aborted: {aborted}", file=sys.stderr)
        if shutdown.problem:
            print(f"shutdown problem: {shutdown.problem}", file=sys.stderr)
        print(log_tail, file=sys.stderr)
        return 1
    report = build_report(args, measured.samples, measured.elapsed_s, measured.ready_s, shutdown)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    failed = {k: v for k, v in report["statuses"].items() if k != "completed"}
    if failed:
        print(f"tasks that did not complete: {failed}", file=sys.stderr)
    if shutdown.problem:
        print(log_tail, file=sys.stderr)
    return 1 if failed or shutdown.problem else 0


if __name__ == "__main__":
    sys.exit(main())
