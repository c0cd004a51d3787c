"""`troupe serve | api | worker | run | db`."""

from __future__ import annotations

import asyncio
import gc
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import uvloop
from rich.console import Console

from troupe.cli.tenancy import key_app, tenant_app
from troupe.config import Settings, load_settings
from troupe.errors import TroupeError
from troupe.observability.logging import configure_logging

if TYPE_CHECKING:
    from troupe.orchestrator.devserver import TemporalDevServer

# Heavy modules (the platform, the HTTP client) are imported inside the commands that
# need them: every command pays for its own imports only, and `serve` launches the
# embedded Temporal before importing the rest so the two overlap.

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Troupe: multi-agent platform")
db_app = typer.Typer(no_args_is_help=True, help="Database schema migrations.")
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")
policy_app = typer.Typer(no_args_is_help=True, help="Authorization policies (Rego).")
app.add_typer(policy_app, name="policy")
console = Console(stderr=True)
_T = TypeVar("_T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="TROUPE_CONFIG",
        help="YAML config (default config/multi-agent.yaml)",
    ),
]


ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        envvar="TROUPE_API_KEY",
        help="API key or token (default: the embedded dev key in data_dir)",
        show_default=False,
    ),
]


def _api_key(given: str | None, config: Path | None) -> str | None:
    """The key to call a server with: the one given, else the embedded dev key."""
    if given:
        return given
    from troupe.auth.dev import read_dev_key

    return read_dev_key(_settings(config).data_dir)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        settings = load_settings(config, **overrides)
    except TroupeError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    configure_logging(settings.log)
    return settings


def _fail(exc: TroupeError) -> typer.Exit:
    console.print(f"[red]error[/red] {exc.code}: {exc.message}")
    return typer.Exit(1)


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> None:
    try:
        # uvloop: the API, the worker and the SSE streams share one loop in `serve`,
        # and its faster I/O and callbacks are CPU the tasks get back.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(main())
    except TroupeError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


def _run_value(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a command's coroutine for its value; a TroupeError exits 1 with its message."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    except TroupeError as exc:
        raise _fail(exc) from exc


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _serve_role(config: Path | None, *, api: bool, worker: bool, **overrides: Any) -> None:
    began = time.perf_counter()
    settings = _settings(config, **overrides)
    try:
        devserver = _launch_embedded_temporal(settings) if api and worker else None
    except TroupeError as exc:
        raise _fail(exc) from exc
    from troupe.platform import running_platform, serve_worker_metrics

    async def main() -> int:
        async with running_platform(
            settings, api=api, worker=worker, devserver=devserver
        ) as platform:
            roles = " + ".join(r for r, on in (("api", api), ("worker", worker)) if on)
            engine = (
                f"embedded Temporal {platform.devserver.address}"
                if platform.devserver
                else f"Temporal {settings.temporal.address}"
            )
            if worker and not api:
                serve_worker_metrics(settings)
            where = f" at {platform.base_url}" if platform.base_url else ""
            console.print(
                f"[green]Troupe ready[/green]{where} ({roles}; {engine}) "
                f"in {time.perf_counter() - began:.2f}s"
            )
            if platform.dev_api_key is not None:
                from troupe.auth.dev import DEV_TENANT, dev_key_path

                console.print(
                    f"dev tenant [bold]{DEV_TENANT}[/bold], API key "
                    f"[bold]{platform.dev_api_key}[/bold] (saved in "
                    f"{dev_key_path(settings.data_dir)}; the troupe CLI uses it)",
                    highlight=False,
                    soft_wrap=True,
                )
            # Everything built so far lives as long as the process: keep the garbage
            # collector from re-scanning it on every collection (shorter pauses).
            gc.freeze()
            await _until_signalled()
            console.print("shutting down…")
        return 0

    _run(main)


def _launch_embedded_temporal(settings: Settings) -> TemporalDevServer | None:
    """Launch the embedded Temporal first thing: it boots while the platform imports."""
    if not settings.embedded:
        return None
    from troupe.orchestrator.devserver import TemporalDevServer

    devserver = TemporalDevServer.for_settings(settings)
    devserver.launch()
    return devserver


HostOption = Annotated[str | None, typer.Option(help="Bind address (server.host)")]
PortOption = Annotated[int | None, typer.Option(help="HTTP port (server.port); 0 = free port")]


def _server_overrides(host: str | None, port: int | None) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    return {"server": server} if server else {}


@app.command()
def serve(config: ConfigOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """API + worker in one process, with embedded Temporal unless temporal.address is set."""
    _serve_role(config, api=True, worker=True, **_server_overrides(host, port))


@app.command()
def api(config: ConfigOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Only the HTTP API (production: needs temporal.address and a migrated database)."""
    _serve_role(config, api=True, worker=False, **_server_overrides(host, port))


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Only the Temporal worker (production: needs temporal.address)."""
    _serve_role(config, api=False, worker=True)


@app.command()
def run(
    query: Annotated[str, typer.Argument(help="What to ask the agents")],
    server: Annotated[
        str | None,
        typer.Option(envvar="TROUPE_SERVER_URL", help="URL of a running Troupe; else embedded"),
    ] = None,
    session_id: Annotated[str | None, typer.Option(help="Session to continue")] = None,
    token_budget: Annotated[int | None, typer.Option(help="Most tokens this task may use")] = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Submit a task, show its progress live, print its result, tokens and cost."""
    from troupe.cli.progress import follow_and_render

    if server is not None:
        key = _api_key(api_key, config)
        _run(
            lambda: follow_and_render(server, query, session_id, token_budget, console, api_key=key)
        )
        return
    with tempfile.TemporaryDirectory(prefix="troupe-run-") as scratch:
        # An ephemeral platform: its own state, a free port, gone when the run ends.
        settings = _settings(config, data_dir=scratch, server={"port": 0})
        _run(lambda: _run_embedded(settings, query, session_id, token_budget))


async def _run_embedded(
    settings: Settings, query: str, session_id: str | None, token_budget: int | None
) -> int:
    from troupe.cli.progress import follow_and_render
    from troupe.platform import running_platform

    began = time.perf_counter()
    async with running_platform(settings, api=True, worker=True) as platform:
        console.print(f"embedded Troupe ready in {time.perf_counter() - began:.2f}s")
        assert platform.base_url is not None
        return await follow_and_render(
            platform.base_url,
            query,
            session_id,
            token_budget,
            console,
            api_key=platform.dev_api_key,
        )


@app.command()
def replay(
    task_ids: Annotated[list[str] | None, typer.Argument(help="Tasks to replay")] = None,
    server: Annotated[
        str | None,
        typer.Option(envvar="TROUPE_SERVER_URL", help="URL of a running Troupe (default: config)"),
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="Save the tasks' histories as JSON here, don't replay")
    ] = None,
    file: Annotated[
        list[Path] | None, typer.Option(help="Replay a saved history file (no server needed)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Replay tasks' workflow histories against this code: a determinism and consistency
    report per task. Exit code 1 when any report diverges."""
    from troupe.cli.replaying import export_histories, replay_files, replay_tasks

    if not task_ids and not file:
        console.print("name task ids, or --file with saved histories")
        raise typer.Exit(2)
    if file:
        _run(lambda: replay_files(file, as_json=as_json, console=console))
        return
    assert task_ids is not None
    if server is None:
        settings = _settings(config)
        server = f"http://{settings.server.host}:{settings.server.port}"
    key = _api_key(api_key, config)
    if export is not None:
        raise typer.Exit(export_histories(server, task_ids, export, api_key=key, console=console))
    _run(lambda: replay_tasks(server, task_ids, api_key=key, as_json=as_json, console=console))


@app.command()
def providers(
    server: Annotated[
        str | None,
        typer.Option(envvar="TROUPE_SERVER_URL", help="URL of a running Troupe (default: config)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON")] = False,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """The model providers of a running Troupe, their circuit breakers, and the tiers."""
    import httpx

    from troupe.cli.progress import providers_table
    from troupe.client import TroupeAPIError, TroupeClient

    if server is None:
        settings = _settings(config)
        server = f"http://{settings.server.host}:{settings.server.port}"
    try:
        with TroupeClient(server, api_key=_api_key(api_key, config)) as client:
            answer = client.providers()
    except TroupeAPIError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {server}: {exc}[/red]")
        raise typer.Exit(1) from None
    out = Console()  # the answer goes to stdout, messages to stderr
    if as_json:
        out.print_json(answer.model_dump_json())
    else:
        out.print(providers_table(answer))


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="Archive to write (.tar.gz)")],
    config: ConfigOption = None,
) -> None:
    """Write the database, the vector memory and a manifest to one archive.

    With Qdrant local mode (the embedded default) stop `troupe serve` first: its
    memory directory serves one process at a time."""
    from troupe.storage.backup import backup as write_backup

    settings = _settings(config)
    manifest = _run_value(lambda: write_backup(settings, path))
    rows = sum(manifest.rows.values())
    points = sum(manifest.points.values())
    Console().print(
        f"wrote {path}: {rows} rows ({manifest.dialect}, migration {manifest.schema_head}), "
        f"{points} memory points",
        highlight=False,
    )


@app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="Archive made by troupe backup")],
    config: ConfigOption = None,
) -> None:
    """Restore an archive into an empty deployment (refused, with nothing changed, when
    the archive is corrupted or does not fit)."""
    from troupe.storage.backup import restore as read_backup

    settings = _settings(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    restored = _run_value(lambda: read_backup(settings, path))
    manifest = restored.manifest
    Console().print(
        f"restored {path}: {sum(manifest.rows.values())} rows, "
        f"{sum(manifest.points.values())} memory points; schema at {restored.schema_head}",
        highlight=False,
    )


@policy_app.command("test")
def policy_test(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Policy directory (default: policy.dir)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List passing tests")] = False,
    config: ConfigOption = None,
) -> None:
    """Run the Rego unit tests (test_* rules of policies/*_test.rego), like `opa test`.
    Exit code 1 when any fails, 2 when a file does not compile."""
    from troupe.policy.rego_tests import run_tests

    where = directory or _settings(config).policy.dir
    try:
        results = run_tests(where)
    except TroupeError as exc:
        console.print(f"[red]{exc.message}[/red]", highlight=False)
        raise typer.Exit(2) from None
    out = Console()
    for result in results:
        if result.outcome == "pass" and not verbose:
            continue
        label = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}[result.outcome]
        line = f"{label}: {result.name} ({result.seconds * 1000:.2f} ms)"
        if result.detail:
            line += f"\n  {result.detail}"
        out.print(line, highlight=False, markup=False)
    passed = sum(r.outcome == "pass" for r in results)
    failed = len(results) - passed
    out.print("-" * 60, highlight=False)
    summary = f"PASS: {passed}/{len(results)}" + (f", FAIL: {failed}" if failed else "")
    out.print(summary, highlight=False)
    if not results:
        console.print(f"no test_* rules in {where}/*_test.rego")
    raise typer.Exit(1 if failed or not results else 0)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    config: ConfigOption = None,
) -> None:
    """Migrate the database schema up (to head by default)."""
    settings = _settings(config)
    _run(lambda: _migrate(settings, revision, up=True))


@db_app.command("diagram")
def db_diagram() -> None:
    """Print the data model as a Mermaid ER diagram (docs/data-model.md holds it)."""
    from troupe.storage.diagram import mermaid

    typer.echo(mermaid(), nl=False)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; base drops everything")],
    config: ConfigOption = None,
) -> None:
    """Migrate the database schema down."""
    settings = _settings(config)
    _run(lambda: _migrate(settings, revision, up=False))


async def _migrate(settings: Settings, revision: str, *, up: bool) -> int:
    from troupe.storage import database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = database.create_engine(settings.database_url)
    try:
        if up:
            await database.upgrade(engine, revision)
        else:
            await database.downgrade(engine, revision)
        current = await database.current_revision(engine)
    finally:
        await engine.dispose()
    console.print(f"database schema at {current or 'base'}")
    return 0


def main() -> None:
    app()
