"""Submit → result latency of simple tasks on a real `troupe serve`.

Starts `troupe serve` (API + worker + embedded Temporal in one process) as a child
process with a fresh temporary data dir, a free loopback port and zero simulated LLM
latency, waits for ``/readyz``, runs a few untimed warm-up tasks, then submits N tasks
through :mod:`troupe.client` and times each one from just before ``submit_task`` until
``wait(task_id)`` returns (it long-polls ``GET /api/v1/tasks/{id}?wait_s=`` until the
task has ended, and returns that read). With ``--concurrency 1`` the blocking
``TroupeClient`` runs one task at a time; with ``--concurrency K`` the
``AsyncTroupeClient`` keeps K tasks in flight until N have been submitted.

Percentiles: ``statistics.quantiles(data, n=100, method="inclusive")``, i.e. linear
interpolation between the closest ranks of the sorted sample (p50 of the cut points is
the median). The server is always stopped with SIGTERM and waited for.

    .venv/bin/python benchmarks/simple_task_latency.py [--tasks 50] [--concurrency 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import httpx
from serving import (
    BenchError,
    ServeProcess,
    Shutdown,
    exit_on_sigterm,
    run_workers,
    shutdown_line,
    span_ms,
)
from stats import PERCENTILE_METHOD, summarize

from troupe.client import AsyncTroupeClient, TroupeAPIError, TroupeClient
from troupe.gateway.schemas import TaskView

TARGET_P50_MS = 100.0  # concurrency 1 only
TARGET_P99_MS = 150.0  # concurrency 1 only
QUERY = "Summarise the trade-offs of event sourcing (benchmark task {index})"


class DeadlineExceeded(BaseException):
    """Raised by SIGALRM. A BaseException, so that no library retry loop swallows it."""


# --------------------------------------------------------------------------- tasks


@dataclass
class Sample:
    task_id: str
    status: str
    wall_ms: float  # submit_task() called → wait() returned
    server_ms: float | None  # task created_at → finished_at, as stored by the server


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


def _sample(task_id: str, final: TaskView, began: float) -> Sample:
    """The Sample of a task that ``wait()`` has just returned; ``began`` is before submit."""
    wall_ms = (time.perf_counter() - began) * 1000
    return Sample(task_id, str(final.status), wall_ms, span_ms(final.created_at, final.finished_at))


def _unreadable(exc: BaseException) -> str:
    """The server-side state of a stuck task when even reading it failed."""
    return f"could not read the task: {type(exc).__name__}"


def _stuck(task_id: str | None, timeout_s: float, state: str) -> BenchError:
    """A task (or its submission) that did not finish within ``timeout_s``."""
    if task_id is None:
        return BenchError(f"submit_task did not answer within {timeout_s:g} s")
    return BenchError(
        f"task {task_id} did not reach a terminal event within {timeout_s:g} s "
        f"(server says: {state})"
    )


def _api_failure(task_id: str | None, exc: Exception) -> BenchError:
    """An API or HTTP error while submitting or waiting for a task."""
    what = f"task {task_id}" if task_id else "submit_task"
    return BenchError(f"{what} failed: {type(exc).__name__}: {exc}")


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
                state = _unreadable(exc)
        raise _stuck(task_id, timeout_s, state) from None
    except (TroupeAPIError, httpx.HTTPError) as exc:
        raise _api_failure(task_id, exc) from exc
    return _sample(task_id, final, began)


def run_sequential(
    base_url: str, api_key: str, first: int, count: int, timeout_s: float
) -> list[Sample]:
    with TroupeClient(base_url, api_key=api_key, transport=httpx.HTTPTransport()) as client:
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
                state = _unreadable(exc)
        raise _stuck(task_id, timeout_s, state) from None
    except (TroupeAPIError, httpx.HTTPError) as exc:
        raise _api_failure(task_id, exc) from exc
    return _sample(task_id, final, began)


async def _run_concurrent(
    base_url: str, api_key: str, first: int, count: int, concurrency: int, timeout_s: float
) -> list[Sample]:
    """K workers share one client; each takes the next task until ``count`` are done."""
    transport = httpx.AsyncHTTPTransport()
    async with AsyncTroupeClient(base_url, api_key=api_key, transport=transport) as client:

        async def job(index: int) -> Sample:
            return await _run_one_async(client, index, timeout_s)

        return await run_workers(first, count, concurrency, job)


def run_concurrent(
    base_url: str, api_key: str, first: int, count: int, concurrency: int, timeout_s: float
) -> list[Sample]:
    return asyncio.run(_run_concurrent(base_url, api_key, first, count, concurrency, timeout_s))


# --------------------------------------------------------------------------- report


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
    assert latency is not None  # --tasks >= 1, and every task gives a sample or aborts the run
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
        "server_span_ms": summarize(spans),
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
    print(shutdown_line(report["shutdown_s"], report["shutdown_exit_code"]))
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


def _run(args: argparse.Namespace, server: ServeProcess, first: int, count: int) -> list[Sample]:
    url, key = server.base_url, server.api_key
    if args.concurrency == 1:
        return run_sequential(url, key, first, count, args.task_timeout)
    return run_concurrent(url, key, first, count, args.concurrency, args.task_timeout)


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
    ready_s = server.wait_ready(timeout_s=args.ready_timeout).ready - launched
    note(f"troupe serve ready at {server.base_url} after {ready_s:.2f} s; warming up")
    if args.warmup:
        _run(args, server, 0, args.warmup)
    note(f"measuring {args.tasks} tasks at concurrency {args.concurrency}")
    began = time.perf_counter()
    samples = _run(args, server, args.warmup, args.tasks)
    elapsed_s = time.perf_counter() - began
    assert server.process is not None
    if server.process.poll() is not None:
        raise BenchError(
            f"troupe serve exited with code {server.process.returncode} during the run"
        )
    return Measured(ready_s, samples, elapsed_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()

    def note(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    server = ServeProcess(
        {
            "TROUPE_LLM__SIMULATION__LATENCY_MS": str(args.latency_ms),
            "TROUPE_LLM__SIMULATION__FAILURE_RATE": "0",
        }
    )
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
