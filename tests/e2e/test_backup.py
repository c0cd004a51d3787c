"""`troupe backup` → wipe → `troupe restore`, on SQLite and on PostgreSQL: every row and
every memory point comes back, the restored deployment serves them, and a damaged or
mismatched archive is refused with nothing changed."""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, select

from tests.e2e.processes import TroupeProcess, operator
from tests.servers import create_database, drop_database
from troupe.client import TroupeClient
from troupe.storage import database

pytestmark = pytest.mark.e2e


def _rows(database_url: str) -> dict[str, list[str]]:
    """Every row of every table but Alembic's, in a comparable form."""

    def read(conn: Connection) -> dict[str, list[str]]:
        meta = MetaData()
        meta.reflect(conn)
        return {
            name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
            for name, table in meta.tables.items()
            if name != "alembic_version"
        }

    async def run() -> dict[str, list[str]]:
        engine = database.create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """What the command printed on stderr, unwrapped (rich wraps long lines)."""
    return " ".join(result.stderr.split())


def _deployment(tmp_path: Path, name: str, database_url: str | None) -> TroupeProcess:
    data = tmp_path / name
    env = {"TROUPE_DATA_DIR": str(data)}
    if database_url is not None:
        env["TROUPE_DATABASE__URL"] = database_url
    return TroupeProcess("serve", env=env, log=tmp_path / f"{name}.log")


def _fill(process: TroupeProcess) -> dict[str, Any]:
    """Tasks in a session and out of one, and a saved document; what to find again."""
    with TroupeClient(process.url, api_key=process.api_key) as client:
        first = client.wait(client.submit_task("Plan a day in Kyoto", session_id="trip").id)
        second = client.wait(client.submit_task("And in Osaka?", session_id="trip").id)
        alone = client.wait(client.submit_task("What is 6 * 7?", strategy="react").id)
        document = client.save_document("Backups run nightly at 02:00 UTC.", title="Ops")
        memories = client.search_memory("nightly backups", concern="documents")
    assert {first.status, second.status, alone.status} == {"completed"}
    return {
        "tasks": [first, second, alone],
        "document": document,
        "memory_ids": [m.id for m in memories.items],
    }


def _refuse_damaged_archives(tmp_path: Path, target: TroupeProcess, archive: Path) -> None:
    """A truncated and a tampered archive are refused, and the empty target stays empty."""
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    refused = operator(target, "restore", str(truncated))
    assert refused.returncode == 1
    assert "restore_refused" in _said(refused)
    assert "corrupted or truncated" in _said(refused)
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as good, tarfile.open(tampered, "w:gz") as bad:
        for member in good.getmembers():
            content = good.extractfile(member)
            assert content is not None
            data = content.read()
            if member.name == "vectors/points.jsonl":
                data = data.replace(b"nightly", b"weekly!")
            member.size = len(data)
            bad.addfile(member, io.BytesIO(data))
    mismatched = operator(target, "restore", str(tampered))
    assert mismatched.returncode == 1
    assert "does not match its checksum" in _said(mismatched)


def _round_trip(
    tmp_path: Path, source_url: str | None, target_url: str | None, *, refusals: bool
) -> None:
    """Fill, back up, restore into an empty deployment, compare every row, serve it; with
    ``refusals`` also the archive-level refusals (the same whatever the database)."""
    source = _deployment(tmp_path, "source", source_url)
    source.start()
    try:
        made = _fill(source)
        if refusals:
            # Qdrant local mode is one process's: backing up a live embedded deployment
            # is refused with the way out, not half done.
            busy = operator(source, "backup", str(tmp_path / "live.tar.gz"))
            assert busy.returncode == 1
            assert "open in another process" in _said(busy)
    finally:
        assert source.stop() == 0, source.output()
    archive = tmp_path / "troupe-backup.tar.gz"
    written = operator(source, "backup", str(archive))
    assert written.returncode == 0, written.stderr
    assert "memory points" in written.stdout
    before = _rows(source_url or f"sqlite+aiosqlite:///{tmp_path / 'source' / 'troupe.db'}")
    assert before["tasks"]
    assert before["events"]
    assert before["token_usage"]
    assert before["messages"]
    assert before["agent_steps"]

    target = _deployment(tmp_path, "target", target_url)
    if refusals:
        _refuse_damaged_archives(tmp_path, target, archive)

    restored = operator(target, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    target_db = target_url or f"sqlite+aiosqlite:///{tmp_path / 'target' / 'troupe.db'}"
    assert _rows(target_db) == before
    # Into a deployment that holds data now: refused.
    again = operator(target, "restore", str(archive))
    assert again.returncode == 1
    assert "restore needs an empty deployment" in _said(again)

    target.start()
    try:
        with TroupeClient(target.url, api_key=target.api_key) as client:
            for task in made["tasks"]:
                back = client.get_task(task.id)
                assert back.result == task.result
                assert back.usage == task.usage
                assert [e.seq for e in client.follow(task.id)][-1] > 1
            assert client.get_session("trip").tasks == 2
            found = client.search_memory("nightly backups", concern="documents")
            assert [m.id for m in found.items] == made["memory_ids"]
            assert found.items[0].text == made["document"].text
            usage = client.usage()
            assert usage.total.calls >= 4
            # It goes on from there: new rows get fresh ids (the sequences came back).
            after = client.wait(client.submit_task("And one more", session_id="trip").id)
            assert after.status == "completed"
            assert client.get_session("trip").tasks == 3
    finally:
        assert target.stop() == 0, target.output()


def test_backup_wipe_restore_on_sqlite(tmp_path: Path) -> None:
    _round_trip(tmp_path, None, None, refusals=True)


@pytest.fixture
def two_databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    made = [asyncio.run(create_database(postgres_url)) for _ in range(2)]
    yield made[0], made[1]
    for url in made:
        asyncio.run(drop_database(url, postgres_url))


def test_backup_wipe_restore_on_postgresql(tmp_path: Path, two_databases: tuple[str, str]) -> None:
    source, target = two_databases
    _round_trip(tmp_path, source, target, refusals=False)


def test_an_archive_of_another_database_kind_is_refused(
    tmp_path: Path, two_databases: tuple[str, str]
) -> None:
    source = _deployment(tmp_path, "lite", None)
    archive = tmp_path / "lite.tar.gz"
    migrated = operator(source, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    assert operator(source, "backup", str(archive)).returncode == 0
    target = _deployment(tmp_path, "pg", two_databases[1])
    refused = operator(target, "restore", str(archive))
    assert refused.returncode == 1
    assert "holds a sqlite database; this deployment uses postgresql" in _said(refused)
