"""`troupe tenant ...` and `troupe key ...`: operators manage tenants and API keys.

They work on the configured database directly (no running server needed). A new key is
printed once, alone on stdout, so a script can capture it: ``KEY=$(troupe key create
--tenant acme)``; everything else goes to stderr.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from troupe.auth.principal import ROLES
from troupe.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from troupe.storage.tenancy import ApiKey, Tenant, TenantDirectory

# Storage is imported inside the commands: importing it here would slow the start of
# every other command (`troupe serve` launches Temporal before its heavy imports).

tenant_app = typer.Typer(no_args_is_help=True, help="Tenants: create, list, suspend, set limits.")
key_app = typer.Typer(no_args_is_help=True, help="API keys: create, list, revoke.")
console = Console(stderr=True)
out = Console()

_T = TypeVar("_T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="TROUPE_CONFIG", help="YAML config"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON")]
RateOption = Annotated[float | None, typer.Option(min=0.001, help="API requests per second")]
BurstOption = Annotated[int | None, typer.Option(min=1, help="Requests allowed at once")]
ConcurrentOption = Annotated[int | None, typer.Option(min=1, help="Unfinished tasks at once")]
DailyTokensOption = Annotated[
    int | None, typer.Option(min=1, help="Tokens per UTC day (default: budgets config)")
]
TaskTokensOption = Annotated[
    int | None, typer.Option(min=1, help="Largest token_budget of one task")
]
DailyMoneyOption = Annotated[
    int | None, typer.Option(min=1, help="Micro-dollars per UTC day (default: budgets config)")
]
TaskMoneyOption = Annotated[
    int | None, typer.Option(min=1, help="Largest cost_budget_micro_usd of one task")
]


def _with_directory(config: Path | None, work: Callable[[TenantDirectory], Awaitable[_T]]) -> _T:
    from troupe.cli.main import _run_value, _settings
    from troupe.storage.tenancy import TenantDirectory

    settings = _settings(config)

    async def main() -> _T:
        directory = TenantDirectory(await _engine(settings))
        try:
            return await work(directory)
        finally:
            await directory.aclose()

    return _run_value(main)


async def _engine(settings: Settings) -> AsyncEngine:
    from troupe.storage import database

    engine = database.create_engine(settings.database_url)
    if settings.database.url is None:  # the embedded SQLite file: bring it up to date
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await database.ensure_current_schema(engine)
    else:
        await database.require_current_schema(engine)
    return engine


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(help="Id: lowercase letters, digits, hyphens")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the id)")] = None,
    plan: Annotated[
        str | None, typer.Option(help="Plan in the policy data (default: policy.default_plan)")
    ] = None,
    daily_tokens: DailyTokensOption = None,
    max_task_tokens: TaskTokensOption = None,
    daily_micro_usd: DailyMoneyOption = None,
    max_task_micro_usd: TaskMoneyOption = None,
    requests_per_s: RateOption = None,
    burst: BurstOption = None,
    max_concurrent_tasks: ConcurrentOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a tenant (limits not given follow the configuration)."""
    from troupe.cli.main import _settings
    from troupe.storage.tenancy import TenantLimits

    limits = TenantLimits(
        **_given_limits(
            daily_tokens,
            max_task_tokens,
            daily_micro_usd,
            max_task_micro_usd,
            requests_per_s,
            burst,
            max_concurrent_tasks,
        )
    )

    chosen = plan or _settings(config).policy.default_plan
    tenant = _with_directory(
        config, lambda d: d.create_tenant(tenant_id, name=name, limits=limits, plan=chosen)
    )
    _show_tenants([tenant], as_json=as_json)


@tenant_app.command("list")
def tenant_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every tenant, with its status and own limits."""
    _show_tenants(_with_directory(config, lambda d: d.list_tenants()), as_json=as_json)


@tenant_app.command("update")
def tenant_update(
    tenant_id: Annotated[str, typer.Argument(help="The tenant")],
    status: Annotated[str | None, typer.Option(help="active | suspended")] = None,
    plan: Annotated[str | None, typer.Option(help="Plan in the policy data")] = None,
    daily_tokens: DailyTokensOption = None,
    max_task_tokens: TaskTokensOption = None,
    daily_micro_usd: DailyMoneyOption = None,
    max_task_micro_usd: TaskMoneyOption = None,
    requests_per_s: RateOption = None,
    burst: BurstOption = None,
    max_concurrent_tasks: ConcurrentOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Suspend or reactivate a tenant, or change the limits given (others stay)."""
    changes = _given_limits(
        daily_tokens,
        max_task_tokens,
        daily_micro_usd,
        max_task_micro_usd,
        requests_per_s,
        burst,
        max_concurrent_tasks,
    )

    async def update(directory: TenantDirectory) -> Tenant:
        limits = None
        if changes:
            current = await directory.get_tenant(tenant_id)
            limits = dataclasses.replace(current.limits, **changes)
        return await directory.update_tenant(tenant_id, status=status, limits=limits, plan=plan)

    _show_tenants([_with_directory(config, update)], as_json=as_json)


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for")],
    name: Annotated[str, typer.Option(help="What the key is for")] = "api",
    user: Annotated[str | None, typer.Option(help="The user it belongs to (made if new)")] = None,
    role: Annotated[str, typer.Option(help=" | ".join(ROLES))] = "member",
    expires_in_days: Annotated[
        float | None, typer.Option(min=0.0, help="Expire after this many days")
    ] = None,
    requests_per_s: RateOption = None,
    burst: BurstOption = None,
    max_concurrent_tasks: ConcurrentOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create an API key; it is printed now and never again."""
    from troupe.storage.tenancy import KeyLimits

    expires = (
        datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    )
    limits = KeyLimits(
        requests_per_s=requests_per_s, burst=burst, max_concurrent_tasks=max_concurrent_tasks
    )
    issued = _with_directory(
        config,
        lambda d: d.create_key(
            tenant,
            name=name,
            role=role,  # type: ignore[arg-type]  # checked by create_key
            user=user,
            expires_at=expires,
            limits=limits,
        ),
    )
    if as_json:
        out.print_json(json.dumps({**_key_json(issued.key), "key": issued.secret}))
        return
    console.print(
        f"key [bold]{issued.key.id}[/bold] for tenant {tenant} ({issued.key.role}); "
        "store it now, it is not shown again:"
    )
    out.print(issued.secret, markup=False, highlight=False, soft_wrap=True)


@key_app.command("list")
def key_list(
    tenant: Annotated[str, typer.Option(help="The tenant")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """The tenant's keys (ids and prefixes; the keys themselves are not stored)."""
    keys = _with_directory(config, lambda d: d.list_keys(tenant))
    if as_json:
        out.print_json(json.dumps([_key_json(k) for k in keys]))
        return
    table = Table("id", "name", "prefix", "role", "user", "state", "expires")
    now = datetime.now(UTC)
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.prefix,
            key.role,
            key.user_name or "",
            key.state(now),
            key.expires_at.isoformat(timespec="seconds") if key.expires_at else "",
        )
    out.print(table)


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...)")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: requests with it are refused (401 auth_revoked) from now on."""
    key = _with_directory(config, lambda d: d.revoke_key(key_id))
    console.print(f"key {key.id} of tenant {key.tenant_id} revoked")


def _given_limits(
    daily_tokens: int | None,
    max_task_tokens: int | None,
    daily_micro_usd: int | None,
    max_task_micro_usd: int | None,
    requests_per_s: float | None,
    burst: int | None,
    max_concurrent_tasks: int | None,
) -> dict[str, Any]:
    """The tenant limits an operator named (the others keep their value)."""
    named = {
        "daily_tokens": daily_tokens,
        "max_task_tokens": max_task_tokens,
        "daily_micro_usd": daily_micro_usd,
        "max_task_micro_usd": max_task_micro_usd,
        "requests_per_s": requests_per_s,
        "burst": burst,
        "max_concurrent_tasks": max_concurrent_tasks,
    }
    return {k: v for k, v in named.items() if v is not None}


def _show_tenants(tenants: list[Tenant], *, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps([_tenant_json(t) for t in tenants]))
        return
    table = Table("id", "name", "status", "plan", "own limits")
    for tenant in tenants:
        own = {k: v for k, v in dataclasses.asdict(tenant.limits).items() if v is not None}
        table.add_row(
            tenant.id,
            tenant.name,
            tenant.status,
            tenant.plan,
            ", ".join(f"{k}={v}" for k, v in own.items()),
        )
    out.print(table)


def _tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "status": tenant.status,
        "plan": tenant.plan,
        "created_at": tenant.created_at.isoformat(),
        "limits": dataclasses.asdict(tenant.limits),
    }


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "name": key.name,
        "role": key.role,
        "prefix": key.prefix,
        "user": key.user_name,
        "state": key.state(datetime.now(UTC)),
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "limits": dataclasses.asdict(key.limits),
    }
