"""Start-up and shutdown time of `troupe serve`.

Each run launches `troupe serve` (API + worker + embedded Temporal in one process) as a
child process with a fresh temporary data dir and a free loopback port, and measures
the time from the launch (just before ``Popen``) to the first 200 from ``/readyz``,
polled every 10 ms. It also notes when ``/readyz`` first answered at all (the HTTP
server is up but a dependency may still answer 503) and the server's own "Troupe ready
... in X.XXs" figure, which starts once the CLI module is imported (so it leaves out the
interpreter start and the CLI's own imports, but counts the platform's). Then it sends
SIGTERM and measures the time until the process has exited, checking that nothing in
its process group (the embedded Temporal server) is left behind.

Untimed warm-up launches (default 1) come first, so that the measured runs are warm:
the Python bytecode cache, the temporal binary and the shared libraries are in the page
cache. Their figures are printed but not counted. Target: < 1.5 s to ready, warm.

    .venv/bin/python benchmarks/serve_ready.py [--runs 5] [--warmup 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any

from serving import BenchError, Readiness, ServeProcess, exit_on_sigterm

TARGET_READY_S = 1.5  # warm start, launch → first 200 from /readyz
SERVER_SETTINGS = {"TROUPE_LLM__SIMULATION__LATENCY_MS": "0"}


def self_reported_ready_s(log_text: str) -> float | None:
    """The "Troupe ready at ... in X.XXs" figure in the server's output (rich may wrap it)."""
    match = re.search(r"Troupe ready.*?\bin\s+([0-9.]+)s", log_text, re.DOTALL)
    return float(match.group(1)) if match else None


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    warmup: bool
    ready_s: float | None  # launch → first 200 from /readyz
    first_answer_s: float | None  # launch → first HTTP answer from /readyz
    not_ready_answers: int
    self_reported_s: float | None  # the server's "Troupe ready ... in X.XXs"
    shutdown_s: float | None  # SIGTERM → exit
    exit_code: int | None
    problem: str | None  # anything that went wrong, verbatim


def one_run(*, warmup: bool, ready_timeout_s: float, poll_s: float) -> tuple[Run, str]:
    """Launch, wait for ready, SIGTERM, wait; always stops the server. Returns the log tail."""
    server = ServeProcess(SERVER_SETTINGS)
    readiness: Readiness | None = None
    failure: str | None = None
    try:
        launched = server.launch()
        readiness = server.wait_ready(timeout_s=ready_timeout_s, poll_s=poll_s)
    except BenchError as exc:
        failure = str(exc)
    finally:
        shutdown = server.stop()
        self_reported = self_reported_ready_s(server.log_text())
        log_tail = server.log_tail()
        server.cleanup()
    problems = [p for p in (failure, shutdown.problem) if p]
    run = Run(
        warmup=warmup,
        ready_s=readiness.ready - launched if readiness else None,
        first_answer_s=readiness.first_answer - launched if readiness else None,
        not_ready_answers=readiness.not_ready_answers if readiness else 0,
        self_reported_s=self_reported,
        shutdown_s=shutdown.seconds,
        exit_code=shutdown.returncode,
        problem="; ".join(problems) or None,
    )
    return run, log_tail


def _fmt(seconds: float | None) -> str:
    return f"{seconds:6.2f}" if seconds is not None else "     -"


def print_run(label: str, run: Run) -> None:
    print(
        f"{label:<9} ready {_fmt(run.ready_s)} s   first answer {_fmt(run.first_answer_s)} s "
        f"({run.not_ready_answers} not-ready)   self-reported {_fmt(run.self_reported_s)} s   "
        f"shutdown {_fmt(run.shutdown_s)} s   exit {run.exit_code}",
        flush=True,
    )
    if run.problem:
        print(f"          PROBLEM: {run.problem}", flush=True)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "max": max(values)}


def build_report(args: argparse.Namespace, runs: list[Run]) -> dict[str, Any]:
    measured = [r for r in runs if not r.warmup]
    ready = _stats([r.ready_s for r in measured if r.ready_s is not None])
    return {
        "benchmark": "serve_ready",
        "runs": len(measured),
        "warmup_runs": args.warmup,
        "poll_interval_ms": args.poll_ms,
        "ready_s": ready,
        "self_reported_s": _stats([r.self_reported_s for r in measured if r.self_reported_s]),
        "shutdown_s": _stats([r.shutdown_s for r in measured if r.shutdown_s is not None]),
        "target_ready_s": TARGET_READY_S,
        "meets_target": ready is not None
        and ready["max"] < TARGET_READY_S
        and all(r.ready_s is not None for r in measured),
        "failed_runs": sum(1 for r in measured if r.problem),
        "each_run": [asdict(r) for r in runs],
    }


def print_summary(report: dict[str, Any]) -> None:
    print(f"over {report['runs']} warm runs (median / max):")
    for key, label in (
        ("ready_s", "launch → /readyz 200"),
        ("self_reported_s", "self-reported ready"),
        ("shutdown_s", "SIGTERM → exit"),
    ):
        stats = report[key]
        line = f"  {label:<22}"
        line += f"{stats['median']:6.2f} / {stats['max']:6.2f} s" if stats else "  no data"
        if key == "ready_s":
            verdict = "ok" if report["meets_target"] else "MISSED"
            line += f"   target < {report['target_ready_s']} s warm  {verdict}"
        print(line)
    if report["failed_runs"]:
        print(f"  {report['failed_runs']} run(s) had problems (see above)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured launches (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed launches first (default 1)")
    parser.add_argument(
        "--poll-ms", type=float, default=10.0, help="/readyz poll interval (default 10)"
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to /readyz")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    runs: list[Run] = []
    plan = [True] * args.warmup + [False] * args.runs
    for number, warmup in enumerate(plan, start=1):
        run, log_tail = one_run(
            warmup=warmup, ready_timeout_s=args.ready_timeout, poll_s=args.poll_ms / 1000
        )
        runs.append(run)
        label = "warm-up" if warmup else f"run {number - args.warmup}"
        if args.json:
            if run.problem:
                print(f"{label}: {run.problem}", file=sys.stderr)
        else:
            print_run(label, run)
        if run.problem:
            print(log_tail, file=sys.stderr, flush=True)
    report = build_report(args, runs)
    if args.json:
        print(json.dumps(report))
    else:
        print_summary(report)
    return 1 if any(r.problem for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
