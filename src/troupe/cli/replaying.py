"""`troupe replay`: reports through a running server, or from saved history files."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from rich.console import Console

from troupe.client import AsyncTroupeClient, TroupeAPIError, TroupeClient
from troupe.orchestrator.report import ReplayReport


def _print(reports: list[ReplayReport], *, as_json: bool, console: Console) -> int:
    out = Console()
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in reports]))
    else:
        for report in reports:
            out.print(report.text(), markup=False, highlight=False)
    return 0 if all(r.consistent for r in reports) else 1


async def replay_tasks(
    server: str, task_ids: list[str], *, api_key: str | None, as_json: bool, console: Console
) -> int:
    reports = []
    async with AsyncTroupeClient(server, api_key=api_key) as client:
        for task_id in task_ids:
            try:
                reports.append(await client.replay_task(task_id))
            except TroupeAPIError as exc:
                console.print(f"[red]{task_id}[/red] {exc.code}: {exc.message}")
                return 1
            except httpx.TransportError as exc:
                console.print(f"[red]cannot reach {server}[/red]: {exc}")
                return 1
    return _print(reports, as_json=as_json, console=console)


def export_histories(
    server: str, task_ids: list[str], directory: Path, *, api_key: str | None, console: Console
) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    with TroupeClient(server, api_key=api_key) as client:
        for task_id in task_ids:
            try:
                exported = client.task_history(task_id)
            except TroupeAPIError as exc:
                console.print(f"[red]{task_id}[/red] {exc.code}: {exc.message}")
                return 1
            except httpx.TransportError as exc:
                console.print(f"[red]cannot reach {server}[/red]: {exc}")
                return 1
            path = directory / f"{exported['workflow_id']}.json"
            path.write_text(json.dumps(exported), encoding="utf-8")
            console.print(f"saved {path}")
    return 0


async def replay_files(files: list[Path], *, as_json: bool, console: Console) -> int:
    # Imported here: replaying runs the workflow code, which needs the Temporal SDK.
    from troupe.orchestrator.replay import load_history, new_replayer, replay_history

    replayer = new_replayer()
    reports = [await replay_history(load_history(path), replayer=replayer) for path in files]
    return _print(reports, as_json=as_json, console=console)
