"""The embedded default's tenant: `troupe serve` on one machine works out of the box.

Only the all-in-one platform with the embedded Temporal makes it (``auth.dev_tenant``);
production roles never do. Its key is an ordinary admin key of tenant ``local``, kept
in ``data_dir/dev-api-key`` (mode 600) so the CLI and the client find it, and so a
restart keeps the same key.
"""

from __future__ import annotations

import os
from pathlib import Path

from troupe.auth.keys import parse_key, same_hash
from troupe.errors import NotFound
from troupe.storage.tenancy import TenantDirectory

DEV_TENANT = "local"
DEV_KEY_FILE = "dev-api-key"


def dev_key_path(data_dir: Path) -> Path:
    return data_dir / DEV_KEY_FILE


def read_dev_key(data_dir: Path) -> str | None:
    """The saved dev key of an embedded deployment, if there is one."""
    try:
        return dev_key_path(data_dir).read_text().strip() or None
    except OSError:
        return None


async def ensure_dev_key(
    directory: TenantDirectory, data_dir: Path, *, plan: str = "standard"
) -> str:
    """The dev tenant's key: the saved one while it is still valid, else a new one."""
    try:
        await directory.get_tenant(DEV_TENANT)
    except NotFound:
        await directory.create_tenant(DEV_TENANT, name="local development", plan=plan)
    saved = read_dev_key(data_dir)
    if saved is not None and await _still_valid(directory, saved):
        return saved
    issued = await directory.create_key(DEV_TENANT, name="dev", role="admin")
    path = dev_key_path(data_dir)
    # Created with mode 600 from the start: the key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(issued.secret + "\n")
    return issued.secret


async def _still_valid(directory: TenantDirectory, key: str) -> bool:
    parts = parse_key(key)
    if parts is None:
        return False
    record = await directory.key_by_prefix(parts.prefix)
    return (
        record is not None
        and record.tenant.id == DEV_TENANT
        and same_hash(record.secret_hash, parts.secret_hash)
        and record.key.revoked_at is None
        and record.key.expires_at is None
    )
