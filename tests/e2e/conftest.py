"""A shared `troupe serve` for the end-to-end tests that only need one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.processes import TroupeProcess
from troupe.client import TroupeClient

JWT_SECRET = "an-hs256-secret-for-the-tests-only-0123456789"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroupeProcess]:
    """`troupe serve` with the embedded defaults and a zero-latency simulated provider;
    it also accepts HS256 JWTs signed with ``JWT_SECRET``."""
    data = tmp_path_factory.mktemp("serve")
    env = {
        "TROUPE_DATA_DIR": str(data),
        "TROUPE_AUTH__JWT__ENABLED": "true",
        "TROUPE_AUTH__JWT__AUDIENCE": "troupe-tests",
        "TROUPE_JWT_SECRET": JWT_SECRET,
    }
    process = TroupeProcess("serve", env=env, log=data / "serve.log")
    process.start()
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture
def client(served: TroupeProcess) -> Iterator[TroupeClient]:
    with TroupeClient(served.url, api_key=served.api_key) as c:
        yield c
