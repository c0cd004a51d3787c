"""The Python examples in the docs run against a real server, so they cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import REPO, TroupeProcess

pytestmark = pytest.mark.e2e

_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


def _examples() -> list[tuple[str, str]]:
    found = []
    for page in DOCS:
        for number, match in enumerate(_BLOCK.finditer(page.read_text()), 1):
            found.append((f"{page.name}#{number}", match.group(1)))
    return found


EXAMPLES = _examples()


def test_the_docs_have_python_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_python_example_runs(served: TroupeProcess, where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code.replace("http://127.0.0.1:8080", served.url))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "TROUPE_API_KEY": served.api_key},
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"
    for expected in re.findall(r"#\s*(\d{3} [a-z_]+)\s*$", code, re.MULTILINE):
        assert expected in done.stdout, f"{where} did not print {expected!r}"
