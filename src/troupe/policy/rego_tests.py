"""`troupe policy test`: the Rego unit tests, run through the embedded engine.

Every rule named ``test_*`` in a package of a ``*_test.rego`` file is one test, as with
``opa test``: it passes when it evaluates to true; false or undefined fails it, and an
evaluation error is an error.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from troupe.policy.rego import load_policy, rego_test_files

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RegoTestResult:
    name: str  # data.<package>.<rule>
    outcome: Literal["pass", "fail", "error"]
    detail: str
    seconds: float


def discover(directory: Path) -> list[str]:
    """The full names of the test rules of the directory's ``*_test.rego`` files."""
    names: list[str] = []
    for path in rego_test_files(directory):
        text = path.read_text(encoding="utf-8")
        package = _PACKAGE.search(text)
        if package is None:
            continue
        names += [
            f"data.{package.group(1)}.{rule}" for rule in dict.fromkeys(_TEST_RULE.findall(text))
        ]
    return names


def run_tests(directory: Path) -> list[RegoTestResult]:
    """Compile the policy with its tests (ConfigError when a file does not compile) and
    run every test."""
    engine = load_policy(directory, with_tests=True).engine
    results = []
    for name in discover(directory):
        started = time.perf_counter()
        try:
            value = engine.eval_rule(name)
        except RuntimeError as exc:
            detail = "\n".join(str(exc).strip().splitlines()[:4])
            results.append(RegoTestResult(name, "error", detail, time.perf_counter() - started))
            continue
        outcome: Literal["pass", "fail"] = "pass" if value is True else "fail"
        detail = "" if value is True else f"evaluated to {value!r}"
        results.append(RegoTestResult(name, outcome, detail, time.perf_counter() - started))
    return results
