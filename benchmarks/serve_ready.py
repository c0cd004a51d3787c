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
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_READY_S = 1.5  # warm start, launch → first 200 from /readyz


class BenchError(Exception):
    """The server misbehaved; the message says exactly what was seen."""


# --------------------------------------------------------------------------- server


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

    def __init__(self) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="troupe-bench-")
        root = Path(self._scratch.name)
        self.data_dir = root / "data"
        self.log_path = root / "serve.log"
        self.port = _free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
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
            TROUPE_LLM__SIMULATION__LATENCY_MS="0",
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

    def wait_ready(self, *, timeout_s: float, poll_s: float) -> Readiness:
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

    def self_reported_ready_s(self) -> float | None:
        """The "Troupe ready at ... in X.XXs" figure (rich may wrap the line)."""
        match = re.search(r"Troupe ready.*?\bin\s+([0-9.]+)s", self.log_text(), re.DOTALL)
        return float(match.group(1)) if match else None

    def cleanup(self) -> None:
        self._scratch.cleanup()


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
    server = ServeProcess()
    readiness: Readiness | None = None
    failure: str | None = None
    try:
        launched = server.launch()
        readiness = server.wait_ready(timeout_s=ready_timeout_s, poll_s=poll_s)
    except BenchError as exc:
        failure = str(exc)
    finally:
        shutdown = server.stop()
        self_reported = server.self_reported_ready_s()
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


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
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
