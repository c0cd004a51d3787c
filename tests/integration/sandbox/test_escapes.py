"""Escape and exhaustion attempts against the real sandbox: each is stopped or denied
with its reason, and the host stays healthy (the next ordinary run still works)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from troupe.config import SandboxSettings
from troupe.sandbox.runner import Sandbox

pytestmark = pytest.mark.integration

SECRET = "troupe-planted-secret-4f1d"


def attempt(expression: str) -> str:
    """Code that tries ``expression`` and prints OPEN or DENIED with the error's type."""
    return (
        "try:\n"
        f"    result = {expression}\n"
        "    print('OPEN', repr(result)[:200])\n"
        "except BaseException as exc:\n"
        "    print('DENIED', type(exc).__name__)\n"
    )


# (id, code, what the run must show): a `killed` reason, or the line it must print.
DENIED = [
    ("fork", attempt("__import__('os').fork()"), "DENIED AttributeError"),
    (
        "thread",
        attempt("__import__('threading').Thread(target=print).start()"),
        "DENIED RuntimeError",
    ),
    ("subprocess", attempt("__import__('subprocess').run(['id'])"), "DENIED OSError"),
    ("os-system", attempt("__import__('os').system('id')"), "DENIED AttributeError"),
    ("os-kill", attempt("__import__('os').kill(1, 9)"), "DENIED AttributeError"),
    ("etc-passwd", attempt("open('/etc/passwd').read()"), "DENIED FileNotFoundError"),
    ("home-ssh", attempt("__import__('os').listdir('/root/.ssh')"), "DENIED FileNotFoundError"),
    ("proc-environ", attempt("open('/proc/self/environ').read()"), "DENIED FileNotFoundError"),
    ("dev-mem", attempt("open('/dev/mem', 'rb').read(1)"), "DENIED FileNotFoundError"),
    ("dotdot", attempt("open('/scratch/../../etc/passwd').read()"), "DENIED PermissionError"),
    ("relative-dotdot", attempt("open('../../../etc/passwd').read()"), "DENIED FileNotFoundError"),
    ("absolute-write", attempt("open('/tmp/planted', 'w').write('x')"), "DENIED FileNotFoundError"),
    ("root-listing", attempt("__import__('os').listdir('/')"), "DENIED FileNotFoundError"),
    (
        "symlink-absolute",
        attempt("__import__('os').symlink('/etc/passwd', '/scratch/link')"),
        "DENIED PermissionError",
    ),
    (
        "tcp-socket",
        attempt("__import__('socket').socket().connect(('127.0.0.1', 9))"),
        "DENIED OSError",
    ),
    (
        "dns",
        attempt("__import__('socket').getaddrinfo('example.com', 80)"),
        "DENIED AttributeError",
    ),
    ("ctypes", attempt("__import__('ctypes')"), "DENIED ModuleNotFoundError"),
]

STOPPED = [
    ("infinite-loop", "while True:\n    pass", {"fuel": 500_000_000}, "cpu"),
    ("busy-past-deadline", "while True:\n    pass", {"fuel": 10**15, "timeout_s": 0.5}, "timeout"),
    (
        "memory-bomb",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(2**24))",
        {"memory_mb": 64},
        "memory",
    ),
    (
        "deep-recursion",
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
        {"fuel": 2_000_000_000},
        "cpu",
    ),
    (
        "huge-file",
        "f = open('/scratch/big', 'wb')\nwhile True:\n    f.write(b'0' * 2**20)",
        {"scratch_bytes": 8 * 2**20, "timeout_s": 20},
        "disk",
    ),
    ("sleep-past-deadline", "import time\ntime.sleep(60)", {"timeout_s": 0.3}, "hard_timeout"),
]


@pytest.fixture(scope="module")
def sandbox_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "sandbox-cache"  # shared with test_sandbox


@pytest.fixture
async def healthy(sandbox_cache: Path) -> AsyncIterator[Sandbox]:
    """A pool that must still run ordinary code after the attempt."""
    sandbox = Sandbox(SandboxSettings(), sandbox_cache)
    yield sandbox
    try:
        after = await sandbox.run("print(6 * 7)")
        assert (after.ok, after.stdout) == (True, "42\n")
    finally:
        await sandbox.aclose()


@pytest.mark.parametrize(("code", "shows"), [c[1:] for c in DENIED], ids=[c[0] for c in DENIED])
async def test_escapes_are_denied(healthy: Sandbox, code: str, shows: str) -> None:
    result = await healthy.run(code)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [shows]


@pytest.mark.parametrize(
    ("code", "limits", "killed"), [c[1:] for c in STOPPED], ids=[c[0] for c in STOPPED]
)
async def test_exhaustion_is_stopped_with_its_reason(
    healthy: Sandbox, sandbox_cache: Path, code: str, limits: dict[str, object], killed: str
) -> None:
    limited = Sandbox(SandboxSettings.model_validate(limits), sandbox_cache)
    try:
        result = await limited.run(code)
    finally:
        await limited.aclose()
    assert result.killed == killed
    assert not result.ok


async def test_an_output_flood_is_capped(healthy: Sandbox) -> None:
    result = await healthy.run(
        "import sys\nsys.stdout.write('o' * 10**7)\nsys.stderr.write('e' * 10**7)"
    )
    assert (len(result.stdout), len(result.stderr)) == (65_536, 65_536)
    assert result.stdout_truncated
    assert result.stderr_truncated


async def test_a_relative_symlink_out_of_scratch_is_never_followed_on_the_host(
    healthy: Sandbox,
) -> None:
    # WASI lets the guest make the link; the host must not read through it.
    code = "import os\nos.symlink('../../../../../../etc/passwd', '/scratch/rel')\nprint('made')"
    result = await healthy.run(code)
    assert result.stdout == "made\n"
    assert result.files == {}
    assert result.files_refused == {"rel": "a symbolic link"}


async def test_too_many_files_are_refused_by_name(healthy: Sandbox) -> None:
    result = await healthy.run("for n in range(30):\n    open(f'/scratch/f{n:02}', 'w').write('x')")
    assert len(result.files) == 20
    assert len(result.files_refused) == 10
    assert set(result.files_refused.values()) == {"more than 20 files"}


async def test_the_hosts_environment_never_reaches_the_guest(
    healthy: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TROUPE_TEST_SECRET", SECRET)
    assert os.environ["TROUPE_TEST_SECRET"] == SECRET
    result = await healthy.run("import os\nprint(dict(os.environ))")
    assert result.stdout == "{'PYTHONDONTWRITEBYTECODE': '1'}\n"
    assert SECRET not in result.stdout


async def test_twenty_runaway_runs_do_not_starve_a_normal_one(sandbox_cache: Path) -> None:
    sandbox = Sandbox(SandboxSettings(timeout_s=0.3, fuel=10**15), sandbox_cache)
    try:
        runaways = [asyncio.create_task(sandbox.run("while True:\n    pass")) for _ in range(20)]
        normal = await sandbox.run("print(sum(range(10)))")
        stopped = await asyncio.gather(*runaways)
    finally:
        await sandbox.aclose()
    assert (normal.ok, normal.stdout) == (True, "45\n")
    assert {r.killed for r in stopped} == {"timeout"}
