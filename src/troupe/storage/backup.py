"""Backup and restore: one archive holds the relational data, the vector memory and a
manifest (versions, migration head, row and point counts, a SHA-256 of every file).

- SQLite: a consistent copy through SQLite's online backup API.
- PostgreSQL: ``pg_dump --format=custom --data-only`` (the schema comes from the
  migrations); restored with ``pg_restore`` into a database migrated to the archive's
  head, then migrated up to this code's head.
- Vector memory: every point (id, vector, payload) exported as JSON lines, written back
  with the same ids; the same for Qdrant local mode and a server, and across the two.

``restore`` checks everything before it changes anything: the archive is whole, every
checksum matches, the database kind and the embedder's size are the target's, the
migration head is one this code knows, and the target deployment is empty.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import zlib
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, MetaData, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import troupe
from troupe.config import Settings
from troupe.errors import ConfigError, InvalidInput
from troupe.storage import database
from troupe.storage.tables import Base
from troupe.storage.vectors import Concern, ExportedPoint, VectorMemory

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database/troupe.db"
PG_FILE = "database/troupe.pgdump"
POINTS_FILE = "vectors/points.jsonl"
_RESTORE_BATCH = 256


class RestoreRefused(InvalidInput):
    """The archive cannot be restored here; nothing was changed."""

    code = "restore_refused"


class Manifest(BaseModel):
    format: int
    troupe_version: str
    created_at: datetime
    dialect: str
    schema_head: str
    rows: dict[str, int]
    embedder: str | None
    dimensions: int | None
    points: dict[str, int]
    files: dict[str, str]  # archive member → SHA-256


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    schema_head: str  # after migrating up


async def backup(settings: Settings, path: Path) -> Manifest:
    """Write the deployment's data to the archive ``path`` (replaced atomically)."""
    engine = database.create_engine(settings.database_url)
    try:
        await database.require_current_schema(engine)
        with tempfile.TemporaryDirectory(prefix="troupe-backup-") as scratch:
            root = Path(scratch)
            (root / "database").mkdir()
            (root / "vectors").mkdir()
            dialect = engine.dialect.name
            if dialect == "sqlite":
                await asyncio.to_thread(_sqlite_copy, _sqlite_path(settings), root / SQLITE_FILE)
            else:
                await _pg(
                    settings,
                    "pg_dump",
                    "--format=custom",
                    "--data-only",
                    "--exclude-table-data=alembic_version",
                    f"--file={root / PG_FILE}",
                )
            rows = await _row_counts(engine)
            embedder, dimensions, points = await _export_vectors(settings, root / POINTS_FILE)
            members = [SQLITE_FILE if dialect == "sqlite" else PG_FILE, POINTS_FILE]
            manifest = Manifest(
                format=FORMAT,
                troupe_version=troupe.__version__,
                created_at=datetime.now(UTC),
                dialect=dialect,
                schema_head=database.SCHEMA_HEAD,
                rows=rows,
                embedder=embedder,
                dimensions=dimensions,
                points=points,
                files={m: _sha256(root / m) for m in members},
            )
            (root / MANIFEST).write_text(manifest.model_dump_json(indent=2))
            partial = path.with_name(f".{path.name}.partial")
            with tarfile.open(partial, "w:gz") as archive:
                for member in [MANIFEST, *members]:
                    archive.add(root / member, arcname=member)
            partial.replace(path)
        return manifest
    finally:
        await engine.dispose()


async def restore(settings: Settings, path: Path) -> Restored:
    """Restore the archive ``path`` into this (empty) deployment; RestoreRefused, with
    nothing changed, when it cannot."""
    with tempfile.TemporaryDirectory(prefix="troupe-restore-") as scratch:
        root = Path(scratch)
        manifest = await asyncio.to_thread(_unpack, path, root)
        engine = database.create_engine(settings.database_url)
        try:
            await _check_target(settings, engine, manifest)
            vectors = await _open_vectors(settings, manifest)
            try:
                if vectors is not None:
                    await _require_no_points(vectors)
                if manifest.dialect == "sqlite":
                    await engine.dispose()
                    await asyncio.to_thread(_sqlite_put, root / SQLITE_FILE, _sqlite_path(settings))
                else:
                    await database.upgrade(engine, manifest.schema_head)
                    await _pg(
                        settings,
                        "pg_restore",
                        "--data-only",
                        "--no-owner",
                        f"--dbname={_pg_database(settings)}",
                        str(root / PG_FILE),
                    )
                await database.upgrade(engine)
                if vectors is not None:
                    await _import_points(vectors, root / POINTS_FILE)
                    restored_points = {c.value: n for c, n in (await vectors.count()).items()}
                    if restored_points != manifest.points:
                        raise RestoreRefused(
                            f"restored {restored_points} memory points; the archive has "
                            f"{manifest.points}"
                        )
            finally:
                if vectors is not None:
                    await vectors.aclose()
            rows = await _row_counts(engine)
            short = {t: n for t, n in manifest.rows.items() if rows.get(t) != n}
            if short:
                raise RestoreRefused(f"restored row counts differ from the archive's: {short}")
            return Restored(manifest=manifest, schema_head=database.SCHEMA_HEAD)
        finally:
            await engine.dispose()


# --------------------------------------------------------------------------- archive


def _unpack(path: Path, root: Path) -> Manifest:
    """Extract and check the archive: whole, expected members, checksums match."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            names = archive.getnames()
            unexpected = set(names) - {MANIFEST, SQLITE_FILE, PG_FILE, POINTS_FILE}
            if unexpected:
                raise RestoreRefused(f"{path} holds unexpected files: {sorted(unexpected)}")
            archive.extractall(root, filter="data")
    except FileNotFoundError:
        raise RestoreRefused(f"{path}: no such archive") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise RestoreRefused(f"{path} is corrupted or truncated ({exc})") from None
    try:
        manifest = Manifest.model_validate_json((root / MANIFEST).read_text())
    except (OSError, ValidationError):
        raise RestoreRefused(f"{path} has no valid {MANIFEST}") from None
    if manifest.format != FORMAT:
        raise RestoreRefused(f"archive format {manifest.format}; this Troupe reads {FORMAT}")
    for member, digest in manifest.files.items():
        file = root / member
        if not file.is_file() or _sha256(file) != digest:
            raise RestoreRefused(f"{member} in {path} does not match its checksum")
    return manifest


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- checks


async def _check_target(settings: Settings, engine: AsyncEngine, manifest: Manifest) -> None:
    if manifest.dialect != engine.dialect.name:
        raise RestoreRefused(
            f"the archive holds a {manifest.dialect} database; this deployment uses "
            f"{engine.dialect.name} (restore into the same kind)"
        )
    if manifest.schema_head not in database.known_revisions():
        raise RestoreRefused(
            f"the archive is at migration {manifest.schema_head}, which this Troupe "
            f"({troupe.__version__}, head {database.SCHEMA_HEAD}) does not know: restore "
            "with the version that made it"
        )
    current = await database.current_revision(engine)
    if current is not None:
        rows = await _row_counts(engine)
        held = {t: n for t, n in rows.items() if n}
        if held:
            raise RestoreRefused(f"restore needs an empty deployment; this one holds {held}")
    if settings.memory.enabled and manifest.embedder is None and any(manifest.points.values()):
        raise RestoreRefused("the archive's memory points have no embedder recorded")


async def _open_vectors(settings: Settings, manifest: Manifest) -> VectorMemory | None:
    if not settings.memory.enabled:
        if any(manifest.points.values()):
            raise RestoreRefused("the archive holds memory points but memory.enabled is false here")
        return None
    from troupe.llm.embeddings import build_embedder

    embedder = build_embedder(settings.memory, settings.llm)
    if manifest.dimensions is not None and manifest.dimensions != embedder.dimensions:
        raise RestoreRefused(
            f"the archive's memory has {manifest.dimensions}-dimensional vectors "
            f"({manifest.embedder}); this deployment's embedder gives {embedder.dimensions}"
        )
    return await VectorMemory.open(settings.memory, embedder, settings.data_dir)


async def _require_no_points(vectors: VectorMemory) -> None:
    held = {c.value: n for c, n in (await vectors.count()).items() if n}
    if held:
        raise RestoreRefused(f"restore needs an empty memory; this one holds {held} points")


# --------------------------------------------------------------------------- data


async def _row_counts(engine: AsyncEngine) -> dict[str, int]:
    def count(conn: Connection) -> dict[str, int]:
        existing = MetaData()
        existing.reflect(conn, only=[t for t in Base.metadata.tables if _has(conn, t)])
        return {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in sorted(existing.tables.items())
        }

    async with engine.connect() as conn:
        return await conn.run_sync(count)


def _has(conn: Connection, table: str) -> bool:
    return inspect(conn).has_table(table)


async def _export_vectors(
    settings: Settings, file: Path
) -> tuple[str | None, int | None, dict[str, int]]:
    points = {c.value: 0 for c in Concern}
    if not settings.memory.enabled:
        await asyncio.to_thread(file.write_text, "")
        return None, None, points
    from troupe.llm.embeddings import build_embedder

    embedder = build_embedder(settings.memory, settings.llm)
    vectors = await VectorMemory.open(settings.memory, embedder, settings.data_dir)
    try:
        with file.open("w") as out:
            async for page in vectors.export():
                for point in page:
                    points[point.concern.value] += 1
                    row = {
                        "concern": point.concern.value,
                        "id": point.id,
                        "vector": point.vector,
                        "payload": point.payload,
                    }
                    out.write(json.dumps(row) + "\n")
        return embedder.name, embedder.dimensions, points
    finally:
        await vectors.aclose()


async def _import_points(vectors: VectorMemory, file: Path) -> None:
    batch: list[ExportedPoint] = []
    with file.open() as lines:
        for line in lines:
            row: dict[str, Any] = json.loads(line)
            batch.append(
                ExportedPoint(
                    concern=Concern(row["concern"]),
                    id=row["id"],
                    vector=row["vector"],
                    payload=row["payload"],
                )
            )
            if len(batch) >= _RESTORE_BATCH:
                await vectors.restore(batch)
                batch = []
    if batch:
        await vectors.restore(batch)


# --------------------------------------------------------------------------- SQLite


def _sqlite_path(settings: Settings) -> Path:
    database_path = make_url(settings.database_url).database
    assert database_path  # the settings' SQLite URL always names a file
    return Path(database_path)


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _sqlite_put(archived: Path, target: Path) -> None:
    """Put the archived database in place of the (empty) target's file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(archived, target)


# --------------------------------------------------------------------------- PostgreSQL


async def _pg(settings: Settings, tool: str, *args: str) -> None:
    """Run pg_dump or pg_restore against the configured database (the password goes
    through the environment, never the command line)."""
    url = make_url(settings.database_url)
    env = {
        **os.environ,  # noqa: TID251 - the tools need PATH and locale; libpq reads PG*
        "PGHOST": url.host or str(url.query.get("host", "")),
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "",
        "PGDATABASE": url.database or "",
    }
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    command = [str(_pg_tool(settings, tool)), *args]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        detail = stderr.decode(errors="replace").strip()[-2000:]
        raise ConfigError(f"{tool} failed (exit {process.returncode}): {detail}")


def _pg_database(settings: Settings) -> str:
    return make_url(settings.database_url).database or ""


def _pg_tool(settings: Settings, tool: str) -> Path:
    """``tool`` from database.pg_bin_dir, else pgserver's, else PATH."""
    candidates: list[Path] = []
    if settings.database.pg_bin_dir is not None:
        candidates.append(settings.database.pg_bin_dir / tool)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "pginstall" / "bin" / tool)
    found = shutil.which(tool)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError(
        f"{tool} not found: set database.pg_bin_dir to the directory of a {tool} no older "
        "than the server"
    )
