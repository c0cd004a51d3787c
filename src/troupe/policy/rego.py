"""The embedded engine: regorus evaluates the policy files in the process (~µs each).

All ``*.rego`` files of the policy directory except the ``*_test.rego`` ones, plus its
``data.json``, make one policy; its version is a digest of those files. The files are
checked for changes at most every ``reload_interval_s``: a change builds a new engine,
and only once it compiles does it replace the one in force. A broken file is refused
with the parse error in the log, and the last good policy stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus

from troupe.errors import ConfigError
from troupe.policy.base import DECISION_PATH, Action, Decision, policy_input

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    engine: regorus.Engine
    version: str
    stamp: tuple[tuple[str, int, int], ...]  # (file, mtime_ns, size) of what was loaded


def policy_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.rego") if not p.name.endswith("_test.rego"))


def rego_test_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*_test.rego"))


def _stamp(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    stamps = []
    for path in files:
        stat = path.stat()
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def load_policy(directory: Path, *, with_tests: bool = False) -> LoadedPolicy:
    """Compile the directory's policy (and its tests); ConfigError naming the file and
    the parse error when one does not compile."""
    if not directory.is_dir():
        raise ConfigError(f"policy.dir {directory} is not a directory")
    files = policy_files(directory) + (rego_test_files(directory) if with_tests else [])
    data_file = directory / "data.json"
    watched = files + ([data_file] if data_file.exists() else [])
    if not policy_files(directory):
        raise ConfigError(f"policy.dir {directory} has no .rego policy files")
    engine = regorus.Engine()
    digest = hashlib.sha256()
    if problem := _compile(engine, files, data_file, digest):
        # Dropped here, on this thread: a regorus Engine must not be dropped on another.
        # Raised from inside an except block, the error's traceback would keep it in a
        # reference cycle, for the garbage collector to drop on whatever thread runs it.
        del engine
        raise ConfigError(problem)
    return LoadedPolicy(engine, digest.hexdigest()[:16], _stamp(watched))


def _compile(engine: regorus.Engine, files: list[Path], data_file: Path, digest: Any) -> str:
    """Add the policy files and data to ``engine``; what does not compile, or ""."""
    for path in files:
        text = path.read_text(encoding="utf-8")
        digest.update(path.name.encode() + b"\0" + text.encode())
        try:
            engine.add_policy(path.name, text)
        except RuntimeError as exc:
            # regorus appends a Rust backtrace: the first lines are the error.
            detail = "\n".join(str(exc).strip().splitlines()[:6])
            return f"policy file {path} does not compile:\n{detail}"
    if data_file.exists():
        text = data_file.read_text(encoding="utf-8")
        digest.update(b"data.json\0" + text.encode())
        try:
            engine.add_data_json(text)
        except (RuntimeError, ValueError) as exc:
            return f"policy data {data_file} is not valid JSON: {exc}"
    return ""


class RegoEngine:
    def __init__(self, directory: Path, *, reload_interval_s: float = 1.0) -> None:
        self._directory = directory
        self._interval = reload_interval_s
        self._policy = load_policy(directory)
        self._next_check = time.monotonic() + reload_interval_s

    @property
    def version(self) -> str:
        return self._policy.version

    async def decide(self, action: Action, input: dict[str, Any]) -> Decision:
        self._reload_if_changed()
        engine = self._policy.engine
        # No await between setting the input and reading the rule: decisions of one
        # process cannot interleave on the engine.
        engine.set_input_json(json.dumps(policy_input(action, input), default=str))
        try:
            document = engine.eval_rule(DECISION_PATH)
        except RuntimeError as exc:
            logger.error("policy evaluation failed for %s: %s", action, str(exc)[:500])
            return Decision(False, "the policy failed to evaluate", False, self.version)
        return Decision.of(document, self.version)

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._interval
        try:
            watched = policy_files(self._directory) + [
                p for p in [self._directory / "data.json"] if p.exists()
            ]
            if _stamp(watched) == self._policy.stamp:
                return
            fresh = load_policy(self._directory)
        except (ConfigError, OSError) as exc:
            logger.error(
                "policy change refused, the policy in force (%s) stays: %s",
                self._policy.version,
                getattr(exc, "message", exc),
            )
            return
        logger.info("policy reloaded: %s → %s", self._policy.version, fresh.version)
        self._policy = fresh

    async def aclose(self) -> None:
        return None
