"""The WASI sandbox for real: python.wasm on wasmtime, a child process per run.

The module is compiled once for the whole test session (~7 s) into a shared cache; each
run then costs ~0.15 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from troupe.config import SandboxSettings
from troupe.errors import InvalidInput
from troupe.sandbox.runner import Sandbox
from troupe.tools.python_exec import render

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled module for the session (the react test with python_exec uses it too)."""
    return tmp_path_factory.getbasetemp() / "sandbox-cache"


_OPEN: list[Sandbox] = []


@pytest.fixture(autouse=True)
async def _close_sandboxes() -> AsyncIterator[None]:
    """Every pool a test made is closed after it: its workers, and a successor that may
    still be starting in the background."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


def _sandbox(cache: Path, **limits: object) -> Sandbox:
    sandbox = Sandbox(SandboxSettings.model_validate(limits), cache)
    _OPEN.append(sandbox)
    return sandbox


async def test_code_runs_and_its_output_comes_back(module_cache: Path) -> None:
    result = await _sandbox(module_cache).run(
        "import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)"
    )
    assert result.ok
    assert (result.stdout, result.stderr) == ("42\n", "warn\n")
    assert result.fuel_used > 0
    assert result.peak_memory_bytes > 0
    assert render(result).startswith("exit code 0\nstdout:\n42")


async def test_the_compiled_module_is_cached_by_version_and_hash(module_cache: Path) -> None:
    sandbox = _sandbox(module_cache)
    first = await sandbox.compiled_module()
    assert first.parent == module_cache
    assert first.name.startswith("python-")
    assert first.suffix == ".cwasm"
    began = time.perf_counter()
    again = await _sandbox(module_cache).compiled_module()
    assert again == first
    assert time.perf_counter() - began < 1.0  # found, not compiled again


@pytest.mark.parametrize(
    ("code", "limits", "killed"),
    [
        ("while True:\n    pass", {"fuel": 1_000_000_000, "timeout_s": 30}, "cpu"),
        ("while True:\n    pass", {"fuel": 10**15, "timeout_s": 0.5}, "timeout"),
        ("x = bytearray(200 * 1024 * 1024)", {"memory_mb": 64}, "memory"),
    ],
    ids=["fuel", "wall-clock", "memory"],
)
async def test_every_limit_stops_the_run_with_its_reason(
    module_cache: Path, code: str, limits: dict[str, object], killed: str
) -> None:
    result = await _sandbox(module_cache, **limits).run(code)
    assert result.killed == killed
    assert not result.ok


async def test_a_blocking_host_call_is_ended_by_the_hard_timeout(module_cache: Path) -> None:
    # Epochs cannot interrupt time.sleep in the guest: the process is killed instead.
    sandbox = _sandbox(module_cache, timeout_s=0.2)
    began = time.perf_counter()
    result = await sandbox.run("import time\ntime.sleep(60)")
    assert result.killed in ("hard_timeout", "timeout")
    assert time.perf_counter() - began < 10


async def test_output_beyond_its_cap_is_cut_and_said(module_cache: Path) -> None:
    result = await _sandbox(module_cache, stdout_bytes=100).run("print('x' * 10000)")
    assert result.stdout == "x" * 100
    assert result.stdout_truncated
    assert render(result).endswith("… [cut]")


async def test_no_network_no_host_files_no_host_environment(module_cache: Path) -> None:
    probes = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9))\n"
        "    print('network: open')\n"
        "except Exception as exc:\n"
        "    print('network:', type(exc).__name__)\n"
        "import os\n"
        "print('env:', sorted(os.environ))\n"
        "for path in ('/', '/etc/passwd', '/root', '..'):\n"
        "    try:\n"
        "        os.listdir(path) if not path.endswith('passwd') else open(path).read()\n"
        "        print(path, 'open')\n"
        "    except Exception as exc:\n"
        "        print(path, type(exc).__name__)\n"
        "print('scratch:', sorted(os.listdir('/scratch')))\n"
    )
    result = await _sandbox(module_cache).run(probes)
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    assert "network: open" not in lines
    assert lines[1] == "env: ['PYTHONDONTWRITEBYTECODE']"
    assert not any(line.endswith(" open") for line in lines)
    assert lines[-1] == "scratch: []"


async def test_files_go_in_and_come_back_within_their_caps(module_cache: Path) -> None:
    code = (
        "data = open('/scratch/input.csv').read()\n"
        "open('/scratch/total.txt', 'w').write(str(sum(int(x) for x in data.split(','))))\n"
        "open('/scratch/big.bin', 'wb').write(b'0' * 5000)\n"
    )
    result = await _sandbox(module_cache, file_bytes=1000).run(
        code, files={"input.csv": b"1,2,3,4"}
    )
    assert result.ok, result.stderr
    assert result.files == {"total.txt": b"10"}
    assert result.files_refused == {"big.bin": "5000 bytes, above 1000"}


async def test_each_run_starts_fresh(module_cache: Path) -> None:
    sandbox = _sandbox(module_cache)
    first = await sandbox.run(
        "import builtins\nbuiltins.leak = 1\nopen('/scratch/x', 'w').write('1')"
    )
    second = await sandbox.run(
        "import builtins, os\nprint(hasattr(builtins, 'leak'), os.listdir('/scratch'))"
    )
    assert first.ok
    assert second.ok
    assert second.stdout == "False []\n"


async def test_runs_in_parallel_are_isolated(module_cache: Path) -> None:
    sandbox = _sandbox(module_cache, max_concurrent_runs=2)
    results = await asyncio.gather(*(sandbox.run(f"print({n} * {n})") for n in range(4)))
    assert [r.stdout for r in results] == ["0\n", "1\n", "4\n", "9\n"]


async def test_bad_input_is_refused_before_anything_runs(module_cache: Path) -> None:
    sandbox = _sandbox(module_cache, max_code_chars=10)
    with pytest.raises(InvalidInput, match="at most 10"):
        await sandbox.run("print('far too long')")
    with pytest.raises(InvalidInput, match="not allowed"):
        await _sandbox(module_cache).run("pass", files={"../escape": b""})


async def test_a_worker_serves_its_runs_then_is_replaced(module_cache: Path) -> None:
    sandbox = _sandbox(module_cache, max_concurrent_runs=1, runs_per_worker=2)
    try:
        await sandbox.warm()
        (first,) = sandbox.idle_workers()
        assert (await sandbox.run("print(1)")).ok
        assert sandbox.idle_workers() == [first]  # one more run to serve
        assert (await sandbox.run("print(2)")).ok
        # Its last run: it is gone, and its successor starts at once, in the background.
        assert first not in sandbox.idle_workers()
        async with asyncio.timeout(10):
            while not sandbox.idle_workers():
                await asyncio.sleep(0.01)
        (second,) = sandbox.idle_workers()
        assert second != first
        assert (await sandbox.run("print(3)")).stdout == "3\n"
        assert sandbox.idle_workers() == [second]
    finally:
        await sandbox.aclose()


async def test_a_stuck_guest_takes_only_its_worker_down(module_cache: Path) -> None:
    sandbox = _sandbox(module_cache, max_concurrent_runs=1, timeout_s=0.3)
    try:
        stuck = await sandbox.run("import time\ntime.sleep(60)")
        assert stuck.killed in ("hard_timeout", "timeout")
        assert (await sandbox.run("print('next')")).stdout == "next\n"
    finally:
        await sandbox.aclose()


async def test_a_worker_that_died_while_idle_is_replaced(module_cache: Path) -> None:
    import os
    import signal

    sandbox = _sandbox(module_cache, max_concurrent_runs=1)
    try:
        await sandbox.warm()
        (pid,) = sandbox.idle_workers()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert (await sandbox.run("print('alive')")).stdout == "alive\n"
        assert sandbox.idle_workers() != [pid]
    finally:
        await sandbox.aclose()
