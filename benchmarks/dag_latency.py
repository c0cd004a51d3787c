"""Orchestration cost of the dag strategy on a real `troupe serve`.

Every case starts its own `troupe serve` (API + worker + embedded Temporal in one
process) as a child process with a fresh temporary data dir and a free loopback port.
The simulation provider is set up so that every dag task is one plan call, then
``PLAN_WIDTH`` (5) agent calls in parallel, then one synthesis call, each taking the
simulated latency (``TROUPE_LLM__SIMULATION__LATENCY_MS``); with 500 ms per call the
LLM critical path is 3 calls = 1.5 s, and whatever a task takes beyond that is the
orchestration overhead. After ``/readyz`` answers 200, untimed warm-up tasks run at the
case's concurrency, then the measured tasks: each is timed from just before
``submit_task(query, strategy="dag")`` until ``wait(task_id)`` returns (the client
long-polls ``GET /api/v1/tasks/{id}?wait_s=`` until the task has ended), and
must have ended ``completed`` with 5 nodes, all ``completed``.

Cases (``--cases``, comma list; default all, in this order):

- ``500ms-1``, ``500ms-10``: 500 ms per call, 1 or 10 tasks in flight (10 in flight =
  up to 50 agents at once), ``--tasks`` tasks; overhead = wall time - 1.5 s;
- ``0ms-1``, ``0ms-10``: no simulated latency, so the wall time is all overhead;
- ``throughput-0ms``, ``throughput-500ms``: 20 concurrent submitters, N tasks in all
  (200 at 0 ms, 100 at 500 ms; ``--throughput-tasks``); completed tasks per second
  from the first submit to the last completion.

Concurrency uses one ``AsyncTroupeClient`` and K asyncio workers that each take the
next task until all have been submitted. Percentiles: ``statistics.quantiles(data,
n=100, method="inclusive")``. The server is always stopped with SIGTERM and waited for.

    .venv/bin/python benchmarks/dag_latency.py [--cases 0ms-1,0ms-10] [--tasks 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
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

from troupe.client import AsyncTroupeClient, TroupeAPIError
from troupe.domain import NodeStatus, TaskStatus
from troupe.gateway.schemas import TaskView

PLAN_WIDTH = 5  # agents per plan: plan call → 5 parallel agent calls → synthesis call
CALLS_ON_CRITICAL_PATH = 3  # plan, one agent, synthesis
QUERY = "Compare event sourcing with CRUD for an order system (dag benchmark task {index})"

# Targets for the orchestration overhead (p99, ms) by tasks in flight, and throughput.
TARGET_OVERHEAD_P99_MS = {1: 150.0, 10: 500.0}
TARGET_THROUGHPUT = 20.0  # completed dag tasks per second

# Measured on this machine (docs: ARCHITECTURE.md, "Orchestration cost on Temporal"):
# overhead above the LLM critical path, p50 / p99 ms, by tasks in flight; runs per second.
ANCHORS_OVERHEAD_MS = {
    1: {"LangGraph+Postgres checkpointer": (14.5, 28.0), "plain temporalio": (121.0, 184.0)},
    10: {"LangGraph+Postgres checkpointer": (27.0, 38.0), "plain temporalio": (435.0, 606.0)},
}
ANCHORS_THROUGHPUT = {"LangGraph+Postgres checkpointer": 73.0, "plain temporalio": 11.0}
ANCHORS_THROUGHPUT_TEXT = (
    "LangGraph+Postgres checkpointer 73 runs/s, plain temporalio ~11 workflows/s"
)


@dataclass(frozen=True)
class Case:
    name: str
    latency_ms: int  # simulated latency per LLM call
    in_flight: int  # tasks in flight at once (concurrent submitters)
    throughput: bool  # a throughput case: its own task count, throughput target
    default_tasks: int | None = None  # None: --tasks

    @property
    def critical_path_ms(self) -> float:
        return float(CALLS_ON_CRITICAL_PATH * self.latency_ms)


CASES = [
    Case("500ms-1", 500, 1, throughput=False),
    Case("500ms-10", 500, 10, throughput=False),
    Case("0ms-1", 0, 1, throughput=False),
    Case("0ms-10", 0, 10, throughput=False),
    Case("throughput-0ms", 0, 20, throughput=True, default_tasks=200),
    Case("throughput-500ms", 500, 20, throughput=True, default_tasks=100),
]
CASES_BY_NAME = {case.name: case for case in CASES}


# --------------------------------------------------------------------------- tasks


@dataclass
class Outcome:
    index: int
    task_id: str | None
    began: float  # perf_counter() just before submit_task()
    ended: float  # perf_counter() when wait() returned (or the task was given up)
    status: str | None  # final status as read from the server; None if never read
    server_ms: float | None  # created_at → finished_at, as stored by the server
    problem: str | None  # None: completed with PLAN_WIDTH nodes, all completed

    @property
    def wall_ms(self) -> float:
        return (self.ended - self.began) * 1000


def _nodes(task: TaskView) -> str:
    return ", ".join(
        f"{n.node_id}={n.status}" + (f" ({n.error.code}: {n.error.message})" if n.error else "")
        for n in task.nodes
    )


def check(task: TaskView) -> str | None:
    """What is wrong with a finished task, or None: completed, PLAN_WIDTH nodes completed."""
    problems = []
    if task.status != TaskStatus.COMPLETED:
        error = f" ({task.error.code}: {task.error.message})" if task.error else ""
        problems.append(f"status {task.status}{error}")
    done = sum(1 for n in task.nodes if n.status == NodeStatus.COMPLETED)
    if len(task.nodes) != PLAN_WIDTH or done != PLAN_WIDTH:
        problems.append(
            f"{len(task.nodes)} nodes, {done} completed, expected {PLAN_WIDTH} [{_nodes(task)}]"
        )
    return "; ".join(problems) or None


async def _state(client: AsyncTroupeClient, task_id: str) -> str:
    """The server-side state of a task that did not finish in time, for the report."""
    try:
        async with asyncio.timeout(5.0):
            task = await client.get_task(task_id)
    except Exception as exc:
        return f"could not read the task: {type(exc).__name__}: {exc}"
    return f"status {task.status}, nodes [{_nodes(task)}]"


async def run_one(client: AsyncTroupeClient, index: int, timeout_s: float) -> Outcome:
    """Submit one dag task and wait for its result; never raises for a task problem."""
    task_id: str | None = None
    began = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            task_id = (await client.submit_task(QUERY.format(index=index), strategy="dag")).id
            final = await client.wait(task_id)
    except TimeoutError:
        ended = time.perf_counter()
        if task_id is None:
            problem = f"submit_task did not answer within {timeout_s:g} s"
        else:
            state = await _state(client, task_id)
            problem = (
                f"did not reach a terminal event within {timeout_s:g} s (server says: {state})"
            )
        return Outcome(index, task_id, began, ended, None, None, problem)
    except (TroupeAPIError, httpx.HTTPError) as exc:
        what = "wait" if task_id else "submit_task"
        problem = f"{what} failed: {type(exc).__name__}: {exc}"
        return Outcome(index, task_id, began, time.perf_counter(), None, None, problem)
    ended = time.perf_counter()
    span = span_ms(final.created_at, final.finished_at)
    return Outcome(index, task_id, began, ended, str(final.status), span, check(final))


async def run_stage(
    client: AsyncTroupeClient,
    first: int,
    count: int,
    in_flight: int,
    timeout_s: float,
    server_gone: Callable[[], str | None],
) -> list[Outcome]:
    """``in_flight`` workers share the client; each takes the next task until none is left.

    A task that fails is recorded and the run goes on, unless the server has exited.
    """

    async def job(index: int) -> Outcome:
        outcome = await run_one(client, index, timeout_s)
        if outcome.problem and (gone := server_gone()):
            raise BenchError(f"{gone} (task {outcome.task_id}: {outcome.problem})")
        return outcome

    return await run_workers(first, count, in_flight, job)


# --------------------------------------------------------------------------- cases


@dataclass
class CaseRun:
    case: Case
    tasks: int
    warmup: int
    ready_s: float | None = None
    warmup_outcomes: list[Outcome] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    aborted: str | None = None
    shutdown: Shutdown | None = None
    dropped_env: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)  # ERROR/CRITICAL/Traceback lines
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU used by the measured tasks


def cpu_seconds(serve_pid: int) -> dict[str, float]:
    """CPU time (user + system) used so far by troupe serve, by its children (the
    embedded Temporal server), and by this client."""

    def used(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    serve = psutil.Process(serve_pid)
    return {
        "troupe serve": used(serve),
        "embedded Temporal": sum(used(c) for c in serve.children(recursive=True)),
        "benchmark client": used(psutil.Process()),
    }


def log_errors(text: str) -> list[str]:
    """Lines of the server's output that report an error (its log levels, tracebacks)."""
    marks = (" ERROR ", " CRITICAL ", "Traceback (most recent call last)")
    return [line for line in text.splitlines() if any(m in line for m in marks)]


def server_settings(case: Case) -> dict[str, str]:
    return {
        "TROUPE_LLM__SIMULATION__LATENCY_MS": str(case.latency_ms),
        "TROUPE_LLM__SIMULATION__PLAN_WIDTH": str(PLAN_WIDTH),
        "TROUPE_LLM__SIMULATION__FAILURE_RATE": "0",
    }


async def _drive(
    run: CaseRun,
    server: ServeProcess,
    timeout_s: float,
    gone: Callable[[], str | None],
) -> None:
    case = run.case
    transport = httpx.AsyncHTTPTransport()
    assert server.process is not None
    pid = server.process.pid
    async with AsyncTroupeClient(
        server.base_url, api_key=server.api_key, transport=transport
    ) as client:
        if run.warmup:
            run.warmup_outcomes = await run_stage(
                client, 0, run.warmup, case.in_flight, timeout_s, gone
            )
        before = cpu_seconds(pid)
        run.outcomes = await run_stage(
            client, run.warmup, run.tasks, case.in_flight, timeout_s, gone
        )
        after = cpu_seconds(pid)
        run.cpu_s = {name: after[name] - before[name] for name in before}


def run_case(
    case: Case, args: argparse.Namespace, note: Callable[[str], None]
) -> tuple[CaseRun, str]:
    """One case on its own fresh server, always stopped. Returns the run and the log tail."""
    tasks: int = args.tasks
    if case.throughput:
        tasks = args.throughput_tasks or case.default_tasks or args.tasks
    warmup = args.warmup if args.warmup is not None else max(5, case.in_flight)
    run = CaseRun(case, tasks, warmup)
    server = ServeProcess(server_settings(case))

    def gone() -> str | None:
        process = server.process
        if process is None or process.poll() is None:
            return None
        return f"troupe serve exited with code {process.returncode} during the run"

    try:
        launched = server.launch()
        run.dropped_env = server.dropped_env
        run.ready_s = server.wait_ready(timeout_s=args.ready_timeout).ready - launched
        note(
            f"[{case.name}] ready after {run.ready_s:.2f} s; {warmup} warm-up tasks, then "
            f"{tasks} tasks, {case.in_flight} in flight, {case.latency_ms} ms per LLM call"
        )
        asyncio.run(_drive(run, server, args.task_timeout, gone))
        if gone_now := gone():
            raise BenchError(gone_now)
    except BenchError as exc:
        run.aborted = str(exc)
    finally:
        run.shutdown = server.stop()  # always: SIGTERM, wait, report anything left behind
        log_tail = server.log_tail()
        run.log_errors = log_errors(server.log_text())
        server.cleanup()
    return run, log_tail


# --------------------------------------------------------------------------- report


def _failure(outcome: Outcome, stage: str) -> dict[str, Any]:
    return {
        "stage": stage,
        "index": outcome.index,
        "task_id": outcome.task_id,
        "status": outcome.status,
        "wall_ms": outcome.wall_ms,
        "problem": outcome.problem,
    }


def case_report(run: CaseRun) -> dict[str, Any]:
    case = run.case
    ok = [o for o in run.outcomes if o.problem is None]
    wall = summarize([o.wall_ms for o in ok])
    overhead = summarize([o.wall_ms - case.critical_path_ms for o in ok])
    span = summarize([o.server_ms for o in ok if o.server_ms is not None])
    elapsed_s = (
        max(o.ended for o in run.outcomes) - min(o.began for o in run.outcomes)
        if run.outcomes
        else None
    )
    throughput = len(ok) / elapsed_s if elapsed_s else None
    ceiling = case.in_flight / (case.critical_path_ms / 1000) if case.latency_ms else None
    failures = [_failure(o, "warm-up") for o in run.warmup_outcomes if o.problem] + [
        _failure(o, "measured") for o in run.outcomes if o.problem
    ]
    target_overhead = None if case.throughput else TARGET_OVERHEAD_P99_MS.get(case.in_flight)
    target_throughput = TARGET_THROUGHPUT if case.throughput else None
    shutdown = run.shutdown
    return {
        "case": case.name,
        "simulation_latency_ms": case.latency_ms,
        "plan_width": PLAN_WIDTH,
        "in_flight": case.in_flight,
        "critical_path_ms": case.critical_path_ms,
        "warmup_tasks": run.warmup,
        "tasks": run.tasks,
        "tasks_measured": len(run.outcomes),
        "tasks_ok": len(ok),
        "wall_ms": wall,
        "overhead_ms": overhead,
        "server_span_ms": span,
        "elapsed_s": elapsed_s,
        "throughput_tasks_per_s": throughput,
        "throughput_ceiling_tasks_per_s": ceiling,
        "target_overhead_p99_ms": target_overhead,
        "meets_overhead_target": (
            overhead["p99"] < target_overhead if overhead and target_overhead else None
        ),
        "target_throughput_tasks_per_s": target_throughput,
        "meets_throughput_target": (
            throughput >= target_throughput if throughput and target_throughput else None
        ),
        "failures": failures,
        "aborted": run.aborted,
        "ready_s": run.ready_s,
        "shutdown_s": shutdown.seconds if shutdown else None,
        "shutdown_exit_code": shutdown.returncode if shutdown else None,
        "shutdown_problem": shutdown.problem if shutdown else None,
        "dropped_env": run.dropped_env,
        "server_log_errors": run.log_errors,
        # CPU milliseconds per measured task, by process; and the machine's cores.
        "cpu_ms_per_task": {
            name: seconds * 1000 / len(run.outcomes) for name, seconds in run.cpu_s.items()
        }
        if run.outcomes
        else {},
        "cpu_count": psutil.cpu_count(),
    }


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("ok" if ok else "MISSED")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_case(report: dict[str, Any]) -> None:
    name, in_flight = report["case"], report["in_flight"]
    print(
        f"== {name}: {report['simulation_latency_ms']} ms per LLM call, {in_flight} in flight, "
        f"{report['tasks']} tasks ({report['warmup_tasks']} warm-up), critical path "
        f"{report['critical_path_ms']:.0f} ms"
    )
    ready = report["ready_s"]
    print("   troupe serve ready " + (f"in {ready:.2f} s" if ready is not None else "never"))
    wall, overhead = report["wall_ms"], report["overhead_ms"]
    print(f"   completed and verified: {report['tasks_ok']} of {report['tasks']}")
    if wall and overhead:
        print(
            f"   submit → result, ms:  p50 {wall['median']:.1f}  p90 {wall['p90']:.1f}  "
            f"p99 {wall['p99']:.1f}  max {wall['max']:.1f}  (min {wall['min']:.1f}, "
            f"mean {wall['mean']:.1f})"
        )
        line = f"   overhead, ms:         p50 {overhead['median']:.1f}  p99 {overhead['p99']:.1f}"
        target = report["target_overhead_p99_ms"]
        if target is not None:
            line += f"   target p99 < {target:.0f}  {_verdict(report['meets_overhead_target'])}"
        print(line)
        anchors = ANCHORS_OVERHEAD_MS.get(in_flight) if target is not None else None
        if anchors:
            print(
                f"     anchors ({in_flight} in flight, p50 / p99 ms): "
                + ", ".join(f"{k} {a:g} / {b:g}" for k, (a, b) in anchors.items())
            )
    span = report["server_span_ms"]
    if span:
        print(
            f"   server created_at → finished_at, ms: median {span['median']:.1f}  "
            f"(p99 {span['p99']:.1f})"
        )
    throughput = report["throughput_tasks_per_s"]
    if throughput is not None:
        line = (
            f"   throughput: {throughput:.1f} completed tasks/s "
            f"({report['tasks_ok']} in {report['elapsed_s']:.2f} s, first submit → last result)"
        )
        target, ceiling = (
            report["target_throughput_tasks_per_s"],
            report["throughput_ceiling_tasks_per_s"],
        )
        if target is not None:
            line += f"   target >= {target:g}  {_verdict(report['meets_throughput_target'])}"
        print(line)
        if target is not None and ceiling is not None and ceiling < target:
            print(
                f"     (ceiling here: {in_flight} in flight / {report['critical_path_ms'] / 1000:g}"
                f" s critical path = {ceiling:.1f} tasks/s, below the target by construction)"
            )
        if target is not None:
            print(f"     anchors: {ANCHORS_THROUGHPUT_TEXT}")
    if cpu := report["cpu_ms_per_task"]:
        print(
            "   CPU per task, ms: "
            + ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items())
            + f" ({report['cpu_count']} cores)"
        )
    print("   " + shutdown_line(report["shutdown_s"], report["shutdown_exit_code"]))
    if report["dropped_env"]:
        print(f"   (not passed to troupe serve: {', '.join(report['dropped_env'])})")
    for failure in report["failures"][:20]:
        print(
            f"   FAILED ({failure['stage']} task {failure['index']}, {failure['task_id']}, "
            f"after {failure['wall_ms']:.0f} ms): {failure['problem']}"
        )
    if len(report["failures"]) > 20:
        print(f"   ... and {len(report['failures']) - 20} more failed tasks (see --json)")
    errors = report["server_log_errors"]
    if errors:
        print(f"   server output has {len(errors)} error line(s); the first ones:")
        for line in errors[:5]:
            print(f"     {line}")
    if report["aborted"]:
        print(f"   ABORTED: {report['aborted']}")
    if report["shutdown_problem"]:
        print(f"   shutdown PROBLEM: {report['shutdown_problem']}")
    sys.stdout.flush()


def print_summary(reports: list[dict[str, Any]]) -> None:
    print(f"summary (ms; percentiles: {PERCENTILE_METHOD})")
    print(
        f"  {'case':<17}{'ok':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"
        f"{'ovh p50':>9}{'ovh p99':>9}{'server':>9}{'tasks/s':>9}  targets"
    )
    for r in reports:
        wall, overhead, span = r["wall_ms"] or {}, r["overhead_ms"] or {}, r["server_span_ms"]
        verdicts = []
        if r["target_overhead_p99_ms"] is not None:
            verdicts.append(
                f"p99 ovh < {r['target_overhead_p99_ms']:.0f}: "
                + _verdict(r["meets_overhead_target"])
            )
        if r["target_throughput_tasks_per_s"] is not None:
            verdicts.append(
                f">= {r['target_throughput_tasks_per_s']:g}/s: "
                + _verdict(r["meets_throughput_target"])
            )
        if r["aborted"] or r["failures"] or r["shutdown_problem"]:
            verdicts.append("PROBLEMS (see above)")
        elif r["server_log_errors"]:
            verdicts.append("server logged errors (see above)")
        tput = r["throughput_tasks_per_s"]
        print(
            f"  {r['case']:<17}{str(r['tasks_ok']) + '/' + str(r['tasks']):>9}"
            f"{_ms(wall.get('median')):>9}{_ms(wall.get('p90')):>9}{_ms(wall.get('p99')):>9}"
            f"{_ms(wall.get('max')):>9}{_ms(overhead.get('median')):>9}"
            f"{_ms(overhead.get('p99')):>9}{_ms(span['median'] if span else None):>9}"
            f"{_ms(tput):>9}  {'; '.join(verdicts)}"
        )


# --------------------------------------------------------------------------- main


def _case_list(text: str) -> list[Case]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES_BY_NAME]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(CASES_BY_NAME)}"
        )
    return [CASES_BY_NAME[n] for n in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--cases",
        type=_case_list,
        default=list(CASES),
        help=f"comma list of cases (default all: {','.join(CASES_BY_NAME)})",
    )
    parser.add_argument(
        "--tasks", type=int, default=100, help="measured tasks per latency case (default 100)"
    )
    parser.add_argument(
        "--throughput-tasks",
        type=int,
        default=None,
        help="tasks per throughput case (default 200 at 0 ms, 100 at 500 ms)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed warm-up tasks per case, at its concurrency (default max(5, in flight))",
    )
    parser.add_argument("--task-timeout", type=float, default=60.0, help="seconds per task")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to /readyz")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.tasks < 1 or (args.throughput_tasks is not None and args.throughput_tasks < 1):
        parser.error("--tasks and --throughput-tasks must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()

    def note(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    reports: list[dict[str, Any]] = []
    for case in args.cases:
        run, log_tail = run_case(case, args, note)
        report = case_report(run)
        reports.append(report)
        if not args.json:
            print_case(report)
        if run.aborted or report["failures"] or report["shutdown_problem"]:
            print(f"[{case.name}] {log_tail}", file=sys.stderr, flush=True)
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "dag_latency",
                    "percentile_method": PERCENTILE_METHOD,
                    "plan_width": PLAN_WIDTH,
                    "targets": {
                        "overhead_p99_ms_by_in_flight": TARGET_OVERHEAD_P99_MS,
                        "throughput_tasks_per_s": TARGET_THROUGHPUT,
                    },
                    "anchors": {
                        "overhead_ms_p50_p99_by_in_flight": ANCHORS_OVERHEAD_MS,
                        "throughput_runs_per_s": ANCHORS_THROUGHPUT,
                    },
                    "cases": reports,
                }
            )
        )
    else:
        print_summary(reports)
    problems = [r for r in reports if r["aborted"] or r["failures"] or r["shutdown_problem"]]
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
