"""A sandbox worker process: `python -m troupe.sandbox.worker CONFIG_JSON`.

It keeps one pre-warmed, single-use guest: CPython-for-WASI started with a trusted boot
script that compiles once, says it is ready, then blocks reading its code from stdin.
The boot imports nothing it can avoid: every module imported there is paid by every
guest (with the usual standard-library set the start-up is ~250 ms, without ~70 ms).

A job (one JSON line on this process's stdin) puts its input files in the guest's
scratch directory and writes the code into the guest's stdin; the guest execs it in
fresh globals and exits. The result is one JSON line on stdout. Then the next guest
boots while the worker waits: every run gets a fresh interpreter, and the start-up is
paid before the code arrives.

The worker ends itself after ``max_runs`` jobs, or after a run it could not stop (a
guest blocked in a host call); the pool then starts a new one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import wasmtime

from troupe.sandbox.guest import STARTUP_FUEL, CappedOutput, engine_config

BOOT = """
import sys, os
compile("x = 1", "<warm-up>", "exec")
sys.stdout.write("\\x00ready\\n")
sys.stdout.flush()
code = sys.stdin.read()
status = 0
try:
    exec(compile(code, "/scratch/main.py", "exec"), {"__name__": "__main__"})
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
except BaseException:
    import traceback  # only now: it drags in a dozen modules
    traceback.print_exc()
    status = 1
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
"""

_READY = b"\x00ready\n"


class _GuestOutput(CappedOutput):
    """Stdout of a warm guest: its ready signal first, then the job's output."""

    def __init__(self, cap: int, ready: threading.Event) -> None:
        super().__init__(cap)
        self._ready = ready
        self._pending = b""

    def __call__(self, data: bytes) -> None:
        if self._ready.is_set():
            super().__call__(data)
            return
        self._pending += data
        if self._pending.startswith(_READY):
            rest, self._pending = self._pending[len(_READY) :], b""
            self._ready.set()
            if rest:
                super().__call__(rest)


class WarmGuest:
    """One guest, booted and waiting for its code; used once."""

    def __init__(self, module: Path, limits: dict[str, Any]) -> None:
        self.limits = limits
        self.root = Path(tempfile.mkdtemp(prefix="troupe-guest-"))
        self.scratch = self.root / "scratch"
        self.scratch.mkdir()
        fifo = self.root / "stdin"
        os.mkfifo(fifo)
        # Opened for reading and writing first, so that opening it as the guest's stdin
        # cannot block; closing it once the code is written gives the guest its EOF.
        self._feed = os.open(fifo, os.O_RDWR)
        self.engine = wasmtime.Engine(engine_config())
        loaded = wasmtime.Module.deserialize_file(self.engine, str(module))
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        self.store = wasmtime.Store(self.engine)
        self.store.set_limits(memory_size=limits["memory_bytes"])
        self.fuel = STARTUP_FUEL + limits["fuel"]
        self.store.set_fuel(self.fuel)
        self.store.set_epoch_deadline(1)
        self.ready = threading.Event()
        self.stdout = _GuestOutput(limits["stdout_bytes"], self.ready)
        self.stderr = CappedOutput(limits["stderr_bytes"])
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["python", "-I", "-S", "-c", BOOT]
        wasi.env = [("PYTHONDONTWRITEBYTECODE", "1")]
        wasi.stdin_file = str(fifo)
        wasi.stdout_custom = self.stdout
        wasi.stderr_custom = self.stderr
        wasi.preopen_dir(str(self.scratch), "/scratch")
        self.store.set_wasi(wasi)
        self.instance = linker.instantiate(self.store, loaded)
        self.exit_code: int | None = None
        self.killed: str | None = None
        self.over_quota = False
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        # The Store is used on this thread only, from here on.
        try:
            self.instance.exports(self.store)["_start"](self.store)  # type: ignore[operator]
            self.exit_code = 0
        except wasmtime.ExitTrap as exit_:
            self.exit_code = exit_.code
        except wasmtime.Trap as trap:
            self.exit_code = -1
            code = trap.trap_code
            if code == wasmtime.TrapCode.OUT_OF_FUEL:
                self.killed = "cpu"
            elif code == wasmtime.TrapCode.INTERRUPT:
                self.killed = "timeout"
            else:
                self.killed = f"trap: {code}"
        self.fuel_left = self.store.get_fuel()
        memory = self.instance.exports(self.store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.peak_memory = memory.data_len(self.store)

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        if not self.ready.wait(30):
            return {"exit_code": -1, "killed": "boot_failed", "stderr": self.stderr.text}
        for name, content in job.get("files", {}).items():
            (self.scratch / name).write_bytes(base64.b64decode(content))
        code = job["code"].encode()
        started = time.perf_counter()
        # The wall-clock limit starts now, not while the guest idled.
        watchdog = threading.Timer(self.limits["timeout_s"], self.engine.increment_epoch)
        watchdog.start()
        quota = threading.Thread(target=self._watch_scratch, daemon=True)
        quota.start()
        view = memoryview(code)
        while view:
            view = view[os.write(self._feed, view) :]
        os.close(self._feed)
        self.thread.join(self.limits["timeout_s"] + 1.0)
        watchdog.cancel()
        wall_s = time.perf_counter() - started
        if self.thread.is_alive():
            # Blocked in a host call (time.sleep): nothing can stop it in this process.
            return {"exit_code": -1, "killed": "hard_timeout", "wall_s": wall_s, "stuck": True}
        killed = "disk" if self.over_quota else self.killed
        if killed is None and "MemoryError" in self.stderr.text:
            killed = "memory"
        files, refused = self._files_back(job)
        return {
            "exit_code": self.exit_code,
            "killed": killed,
            "stdout": self.stdout.text,
            "stderr": self.stderr.text,
            "stdout_dropped": self.stdout.dropped,
            "stderr_dropped": self.stderr.dropped,
            "fuel_used": self.fuel - self.fuel_left,
            "wall_s": wall_s,
            "peak_memory_bytes": self.peak_memory,
            "files": files,
            "files_refused": refused,
        }

    def _watch_scratch(self) -> None:
        """Stop the guest once its scratch directory outgrows ``scratch_bytes`` (WASI has
        no quota; checked every 10 ms, so a run may overshoot by what it writes in that
        time, itself bounded by its memory)."""
        limit = self.limits["scratch_bytes"]
        while self.thread.is_alive():
            used = sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(self.scratch))
            if used > limit:
                self.over_quota = True
                self.engine.increment_epoch()
                return
            time.sleep(0.01)

    def _files_back(self, job: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        limits = self.limits
        inputs = job.get("files", {})
        files: dict[str, str] = {}
        refused: dict[str, str] = {}
        for path in sorted(self.scratch.iterdir()):
            if path.is_symlink():
                # Never followed: it would be resolved on the host, outside the sandbox.
                refused[path.name] = "a symbolic link"
                continue
            if not path.is_file():
                continue
            content = path.read_bytes()
            if path.name in inputs and base64.b64decode(inputs[path.name]) == content:
                continue  # an input, unchanged
            if len(files) >= limits["max_files"]:
                refused[path.name] = f"more than {limits['max_files']} files"
            elif len(content) > limits["file_bytes"]:
                refused[path.name] = f"{len(content)} bytes, above {limits['file_bytes']}"
            else:
                files[path.name] = base64.b64encode(content).decode()
        return files, refused

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    config = json.loads(sys.argv[1])
    module, limits = Path(config["module"]), config["limits"]
    guest = WarmGuest(module, limits)
    for runs, line in enumerate(sys.stdin, start=1):
        result = guest.run(json.loads(line))
        # The worker's last run: the pool must not send it another job.
        result["last"] = bool(result.get("stuck")) or runs >= config["max_runs"]
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        guest.discard()
        if result["last"]:
            break
        guest = WarmGuest(module, limits)  # the next one boots while we wait
    # Straight out: a stuck guest thread cannot be joined, and wasmtime's WASI threads
    # can abort at interpreter shutdown.
    os._exit(0)


if __name__ == "__main__":
    main()
