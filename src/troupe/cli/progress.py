"""Live progress of one task in the terminal, through the HTTP client."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from troupe.client import AsyncTroupeClient, TroupeAPIError
from troupe.domain import TaskStatus
from troupe.gateway.schemas import EventView, ProvidersView, TaskView


def _event_line(event: EventView) -> str:
    data = event.data
    if event.type == "llm.call":
        return (
            f"{data['provider']}/{data['model']}: {data['prompt_tokens']} prompt + "
            f"{data['completion_tokens']} completion tokens, {data['latency_ms']} ms"
        )
    if event.type == "task.started":
        return f"attempt {data.get('attempt', 1)}"
    if "error" in data and isinstance(data["error"], dict):
        return str(data["error"].get("message", ""))
    return ""


def dollars(micro_usd: int) -> str:
    return f"${micro_usd / 1_000_000:.6f}"


def usage_table(task: TaskView) -> Table:
    table = Table(title="Usage", show_header=False, box=None)
    table.add_row("prompt tokens", str(task.usage.prompt_tokens))
    table.add_row("completion tokens", str(task.usage.completion_tokens))
    table.add_row("total tokens", f"{task.usage.total_tokens} of {task.token_budget}")
    table.add_row("cost", dollars(task.usage.cost_micro_usd))
    if task.started_at and task.finished_at:
        elapsed = (task.finished_at - task.created_at).total_seconds()
        table.add_row("time", f"{elapsed * 1000:.0f} ms")
    return table


async def follow_and_render(
    base_url: str,
    query: str,
    session_id: str | None,
    token_budget: int | None,
    console: Console,
    *,
    api_key: str | None,
) -> int:
    """Submit, stream events live, then print the result; exit code 0 only on success."""
    async with AsyncTroupeClient(base_url, api_key=api_key) as client:
        try:
            task = await client.submit_task(query, session_id=session_id, token_budget=token_budget)
        except TroupeAPIError as exc:
            console.print(f"[red]rejected[/red] {exc.code}: {exc.message}")
            return 1
        console.print(f"task [bold]{task.id}[/bold] accepted")
        events = Table(show_header=True, header_style="bold", box=None)
        for column in ("#", "event", "detail"):
            events.add_column(column)
        spinner = Spinner("dots", text="running")
        with Live(
            Group(events, spinner), console=console, refresh_per_second=12, transient=False
        ) as live:
            async for event in client.follow(task.id):
                events.add_row(str(event.seq), event.type, _event_line(event))
            live.update(events)  # the spinner goes; the table of events stays
        console.line()
        final = await client.get_task(task.id)
    style = "green" if final.status is TaskStatus.COMPLETED else "red"
    body = final.result or (final.error.message if final.error else "")
    out = Console()  # the result to stdout, so it can be piped; progress stays on stderr
    out.print(Panel(Text(body), title=f"[{style}]{final.status.value}[/{style}]", expand=False))
    out.print(usage_table(final))
    return 0 if final.status is TaskStatus.COMPLETED else 1


def providers_table(answer: ProvidersView) -> Table:
    """One row per provider (breaker state) and, under it, where each tier routes."""
    table = Table(title="Providers", title_justify="left")
    table.add_column("provider")
    table.add_column("kind")
    table.add_column("breaker")
    table.add_column("recent failures", justify="right")
    table.add_column("serves")
    colours = {"closed": "green", "half_open": "yellow", "open": "red"}
    for provider in answer.providers:
        serves = [
            f"{tier}: {c.model} (priority {c.priority}, weight {c.weight})"
            for tier, candidates in answer.tiers.items()
            for c in candidates
            if c.provider == provider.name
        ]
        colour = colours.get(provider.breaker, "white")
        table.add_row(
            provider.name,
            provider.kind,
            f"[{colour}]{provider.breaker}[/{colour}]",
            str(provider.recent_failures),
            "\n".join(serves) or "-",
        )
    table.caption = (
        "a tier whose candidates all fail falls back to the next tier down"
        if answer.fallback_to_lower_tier
        else "no fallback across tiers"
    )
    return table
