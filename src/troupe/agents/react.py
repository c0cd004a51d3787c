"""Tool-using agents: an LLM with native tool calling ↔ tool execution.

One *step* is one LLM call offered the agent's tools (plus ``update_beliefs``): the
model either answers in text or asks for tool calls, which run at once (each
authorized by the policy's ``tool.invoke``) and come back as observations for the
next step. Every step is metered and recorded: its tokens and cost, each call's tool
time and sandbox fuel, and the agent's BeliefState after it (``agent_steps`` and a
``react.step`` event).

The react strategy runs one step per workflow activity (``ReactAgent``); a plan node
that was given tools runs its steps inside its own activity (``ToolAgent.run``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from troupe.agents.beliefs import UPDATE_BELIEFS, UPDATE_BELIEFS_SPEC, beliefs_of, parse_update
from troupe.agents.beliefs import render as render_beliefs
from troupe.agents.metering import CallContext, MeteredLLM
from troupe.config import LLMSettings, OrchestratorSettings
from troupe.domain import AgentStep, ModelTier, TaskStatus, ToolCallRun
from troupe.errors import ConfigError, InvalidInput
from troupe.llm.messages import ChatMessage, ToolCall, ToolSpec
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.payloads import ReactStepResult, ReactTurn
from troupe.policy.authorizer import Authorizer
from troupe.storage.repositories import LLMCallRecord
from troupe.tools.base import ToolCaller, ToolOutput, ToolRegistry

AGENT_PROMPT = (
    "You solve the task step by step with the tools you are given. Call a tool for "
    "anything you cannot know or compute reliably yourself, and update_beliefs to note "
    "what you established, what is still open and your plan. When you can answer, reply "
    "with the answer as plain text (no tool call) and end it with the facts it rests "
    "on, cited as [F1], [F2] ..."
)
LAST_STEP = "This is the last step: answer now from what you have, no more tools."


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """An answer, or the tool calls the step made; the step's metered call either way."""

    answer: str | None
    turns: tuple[ReactTurn, ...]
    call: LLMCallRecord
    step: AgentStep


class ToolAgent:
    """Runs steps of a tool-using agent and records each one."""

    def __init__(
        self,
        llm: MeteredLLM,
        journal: TaskJournal,
        tools: ToolRegistry,
        llm_settings: LLMSettings,
        orchestrator: OrchestratorSettings,
        *,
        authorizer: Authorizer | None = None,
    ) -> None:
        unknown = [p for p in orchestrator.react_tools if not _matches_any(p, tools.names())]
        if unknown:
            raise ConfigError(
                f"orchestrator.react_tools names unknown tools {sorted(unknown)}; "
                f"available: {tools.names()}"
            )
        self._llm = llm
        self._journal = journal
        self._tools = tools
        self._authorizer = authorizer
        self._patterns = orchestrator.react_tools
        self._llm_settings = llm_settings
        self._orchestrator = orchestrator

    def offered(self, tenant_id: str, wanted: Iterable[str] | None = None) -> list[str]:
        """The tools an agent of this tenant gets: those ``react_tools`` names (an
        MCP server's all with ``<server>__*``) that the tenant may see, narrowed to
        ``wanted`` (a plan node's list) when given."""
        names = [n for n in self._tools.names(tenant_id) if _allowed(n, self._patterns)]
        if wanted is not None:
            chosen = set(wanted)
            names = [n for n in names if n in chosen]
        return names

    async def step(
        self,
        ctx: CallContext,
        *,
        system: str,
        query: str,
        turns: tuple[ReactTurn, ...],
        offered: list[str],
        number: int,
        last: bool,
        tier: ModelTier,
        index: int = 0,
    ) -> StepOutcome:
        """Step ``number`` (from 1): one metered call, then the tool calls it asked for."""
        beliefs = beliefs_of(turns)
        prompt = f"{system}\n\n{render_beliefs(beliefs)}"
        if last:
            prompt += f"\n\n{LAST_STEP}"
        specs: tuple[ToolSpec, ...] = ()
        if not last:
            specs = (*(ToolSpec(**d) for d in self._tools.describe(offered)), UPDATE_BELIEFS_SPEC)
        metered = await self._llm.call(
            ctx, _transcript(prompt, query, turns), tier=tier, index=index, tools=specs
        )
        response = metered.response
        usage = metered.record.usage
        if last or not response.tool_calls:
            step = AgentStep(
                node_id=ctx.node_id,
                step=number,
                thought="",
                calls=(),
                answer=response.content,
                beliefs=beliefs,
                usage=usage,
                tool_seconds=0.0,
                fuel=0,
            )
            return StepOutcome(response.content, (), metered.record, step)
        new_turns: list[ReactTurn] = []
        runs: list[ToolCallRun] = []
        for call in response.tool_calls:
            output = await self._act(ctx, call, offered)
            new_turns.append(
                ReactTurn(
                    thought=response.content,
                    tool=call.name,
                    arguments=call.arguments,
                    observation=output.text,
                    call_id=call.id,
                    step=number,
                    ok=output.ok,
                    confidence=output.confidence,
                )
            )
            runs.append(
                ToolCallRun(
                    tool=call.name,
                    arguments=call.arguments,
                    ok=output.ok,
                    observation=output.text,
                    seconds=output.seconds,
                    fuel=output.fuel,
                )
            )
        step = AgentStep(
            node_id=ctx.node_id,
            step=number,
            thought=response.content,
            calls=tuple(runs),
            answer=None,
            beliefs=beliefs_of((*turns, *new_turns)),
            usage=usage,
            tool_seconds=sum(r.seconds for r in runs),
            fuel=sum(r.fuel or 0 for r in runs),
        )
        return StepOutcome(None, tuple(new_turns), metered.record, step)

    async def run(
        self,
        ctx: CallContext,
        *,
        system: str,
        query: str,
        offered: list[str],
        tier: ModelTier,
    ) -> tuple[str, LLMCallRecord, tuple[ReactTurn, ...]]:
        """A whole agent inside one activity (a plan node with tools): steps until it
        answers or ``react_max_steps``; every step but the answer is recorded here, the
        answer's call is the caller's to record with the output."""
        turns: tuple[ReactTurn, ...] = ()
        steps = self._orchestrator.react_max_steps
        for number in range(1, steps + 1):
            outcome = await self.step(
                ctx,
                system=system,
                query=query,
                turns=turns,
                offered=offered,
                number=number,
                last=number == steps,
                tier=tier,
                index=number - 1,
            )
            await self._journal.agent_step(ctx.tenant_id, ctx.task_id, outcome.step)
            if outcome.answer is not None:
                return outcome.answer, outcome.call, turns
            await self._journal.llm_call(ctx.tenant_id, ctx.task_id, outcome.call)
            turns = (*turns, *outcome.turns)
        raise AssertionError("the last step always answers")

    async def _act(self, ctx: CallContext, call: ToolCall, offered: list[str]) -> ToolOutput:
        """Run one call; a refusal is an observation the agent can react to, but a
        policy denial ends the task (PolicyDenied) with the policy's reason."""
        if call.name == UPDATE_BELIEFS:
            update = parse_update(call.arguments)
            if isinstance(update, str):
                return ToolOutput(text=update, ok=False, confidence=0)
            return ToolOutput(text="noted", confidence=0)
        if call.name not in offered:
            return ToolOutput(
                text=f"error: tool {call.name!r} is not available; use one of {offered}",
                ok=False,
                confidence=0,
            )
        if self._authorizer is not None and ctx.actor is not None:
            try:
                facts = await self._tools.policy_facts(call.name, call.arguments)
            except InvalidInput as exc:
                return ToolOutput(text=f"error: {exc.message}", ok=False, confidence=0)
            request = {
                **facts,
                "tool": {"name": call.name},
                "arguments": call.arguments,
                "argument_bytes": len(json.dumps(call.arguments)),
                "sandboxed": self._tools.sandboxed(call.name),
            }
            await self._authorizer.require("tool.invoke", ctx.actor, request, task_id=ctx.task_id)
        caller = ToolCaller(tenant_id=ctx.tenant_id, task_id=ctx.task_id, session_id=ctx.session_id)
        return await self._tools.call(call.name, call.arguments, caller)


class ReactAgent:
    """The react strategy: one step per activity; the answer completes the task."""

    def __init__(self, agent: ToolAgent, journal: TaskJournal, llm_settings: LLMSettings) -> None:
        self._agent = agent
        self._journal = journal
        self._llm_settings = llm_settings

    async def step(
        self,
        ctx: CallContext,
        query: str,
        turns: tuple[ReactTurn, ...],
        *,
        attempt: int,
        last: bool,
    ) -> ReactStepResult:
        if turns:
            task = await self._journal.task(ctx.tenant_id, ctx.task_id)
        else:
            task = await self._journal.started(ctx.tenant_id, ctx.task_id, attempt=attempt)
        if task.status.terminal:
            # An earlier attempt answered and crashed before Temporal heard of it.
            return ReactStepResult(answer=task.result or "")
        outcome = await self._agent.step(
            ctx,
            system=AGENT_PROMPT,
            query=query,
            turns=turns,
            offered=self._agent.offered(ctx.tenant_id),
            number=_steps_taken(turns) + 1,
            last=last,
            tier=self._llm_settings.default_tier,
        )
        if outcome.answer is not None:
            await self._journal.agent_step(ctx.tenant_id, ctx.task_id, outcome.step)
            await self._journal.finished(
                ctx.tenant_id,
                ctx.task_id,
                TaskStatus.COMPLETED,
                result=outcome.answer,
                call=outcome.call,
            )
            return ReactStepResult(answer=outcome.answer)
        await self._journal.llm_call(ctx.tenant_id, ctx.task_id, outcome.call)
        await self._journal.agent_step(ctx.tenant_id, ctx.task_id, outcome.step)
        return ReactStepResult(turns=outcome.turns)


def _transcript(system: str, query: str, turns: tuple[ReactTurn, ...]) -> tuple[ChatMessage, ...]:
    """The conversation so far: each step's tool calls as one assistant turn, then
    their results as tool turns."""
    messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=query)]
    for group in _by_step(turns):
        ids = [t.call_id or f"call_{len(messages)}_{n}" for n, t in enumerate(group)]
        calls = tuple(
            ToolCall(id=i, name=t.tool, arguments=dict(t.arguments))
            for i, t in zip(ids, group, strict=True)
        )
        messages.append(ChatMessage(role="assistant", content=group[0].thought, tool_calls=calls))
        messages += [
            ChatMessage(role="tool", content=t.observation, tool_call_id=i)
            for i, t in zip(ids, group, strict=True)
        ]
    return tuple(messages)


def _by_step(turns: tuple[ReactTurn, ...]) -> list[list[ReactTurn]]:
    """Turns grouped by the step that made them (older histories: one per step)."""
    groups: list[list[ReactTurn]] = []
    for turn in turns:
        if groups and turn.step and groups[-1][0].step == turn.step:
            groups[-1].append(turn)
        else:
            groups.append([turn])
    return groups


def _steps_taken(turns: tuple[ReactTurn, ...]) -> int:
    return len(_by_step(turns))


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or (p.endswith("__*") and name.startswith(p[:-1])) for p in patterns)


def _matches_any(pattern: str, names: Iterable[str]) -> bool:
    return any(_allowed(n, (pattern,)) for n in names)
