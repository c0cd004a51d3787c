"""Troupe processes for end-to-end tests: started like an operator would, over loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from troupe.auth.dev import read_dev_key
from troupe.orchestrator.devserver import free_port

TROUPE = str(Path(sys.executable).parent / "troupe")
REPO = Path(__file__).parents[2]


# For processes whose tests have nothing to do with memory: Qdrant's client costs
# ~1.4 s of imports at every start, and the suite starts many processes.
NO_MEMORY = {"TROUPE_MEMORY__ENABLED": "false"}


def child_env(extra: dict[str, str], *, port: int | None = None) -> dict[str, str]:
    """The environment of a troupe child process: loopback only, quiet logs."""
    env = {**os.environ, "TROUPE_SERVER__HOST": "127.0.0.1", "TROUPE_LOG__LEVEL": "WARNING"}
    if port is not None:
        env["TROUPE_SERVER__PORT"] = str(port)
    return {**env, **extra}


class TroupeProcess:
    """`troupe serve | api | worker` as a child process with its own environment."""

    def __init__(
        self, role: str, *, env: dict[str, str], log: Path, port: int | None = None
    ) -> None:
        self.role = role
        self.port = port if port is not None else free_port()
        self.env = child_env(env, port=self.port)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        """The embedded dev tenant's key (`troupe serve` makes it on start), unless the
        test gave one (``TROUPE_API_KEY`` in ``env``)."""
        if "TROUPE_API_KEY" in self.env:
            return self.env["TROUPE_API_KEY"]
        key = read_dev_key(Path(self.env["TROUPE_DATA_DIR"]))
        assert key is not None, f"troupe {self.role} made no dev key"
        return key

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authenticate a raw HTTP request as the process's key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self, *, wait_ready: bool = True, timeout_s: float = 30) -> TroupeProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [TROUPE, self.role],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait_ready and self.role != "worker":
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"troupe {self.role} exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"troupe {self.role} not ready in {timeout_s}s:\n{self.output()}")

    def wait_log(self, needle: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{needle!r} never appeared in the log of troupe {self.role}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self, timeout_s: float = 20) -> int:
        """A graceful stop (SIGTERM); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise


def operator(process: TroupeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`troupe ARGS` run by an operator against the process's storage (same settings)."""
    return subprocess.run(
        [TROUPE, *args], env=process.env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def new_tenant_key(
    process: TroupeProcess, tenant: str, *tenant_options: str, key_options: tuple[str, ...] = ()
) -> str:
    """A new tenant of ``process`` (unless it exists) and a new key for it."""
    made = operator(process, "tenant", "create", tenant, *tenant_options)
    assert made.returncode == 0 or "tenant_exists" in made.stderr, made.stderr
    key = operator(process, "key", "create", "--tenant", tenant, *key_options)
    assert key.returncode == 0, key.stderr
    return key.stdout.strip()
