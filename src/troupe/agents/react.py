"""The react agent: reason → act (a tool) → observe, one step per call.

Each step is one LLM call with structured output: a thought and either a tool call or
the answer. A tool call is run at once and its observation returned, so the workflow
runs one activity per step and keeps the transcript; the answer completes the task.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field, ValidationError

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.config import LLMSettings, OrchestratorSettings
from troupe.domain import EventType, TaskStatus
from troupe.errors import ConfigError, InvalidInput, NotFound
from troupe.llm.messages import ChatMessage, StructuredOutput
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.payloads import ReactStepResult, ReactTurn
from troupe.policy.authorizer import Authorizer
from troupe.tools.base import ToolRegistry


class ToolCall(BaseModel):
    tool: str
    arguments: dict[str, object] = Field(default_factory=dict)


class ReactStep(BaseModel):
    """What the model says at one step: its reasoning, then a tool call or the answer."""

    thought: str = ""
    action: ToolCall | None = None
    answer: str | None = None


STEP_FORMAT = StructuredOutput(name="ReactStep", json_schema=ReactStep.model_json_schema())


def react_prompt(tools: list[dict[str, object]], *, last: bool) -> str:
    prompt = (
        "You solve the task step by step. At each step reply with JSON: a short "
        '"thought", then either "action": {"tool": ..., "arguments": {...}} to use a '
        'tool, or "answer": the final answer. Use tools for anything you cannot '
        "know or compute reliably yourself. Tools:\n" + json.dumps(tools)
    )
    if last:
        prompt += "\nThis is the last step: give the answer now, no more tools."
    return prompt


class ReactAgent:
    """Runs one step of the loop and records it."""

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
        self._llm = llm
        self._journal = journal
        self._authorizer = authorizer
        unknown = sorted(set(orchestrator.react_tools) - set(tools.names()))
        if unknown:
            raise ConfigError(
                f"orchestrator.react_tools names unknown tools {unknown}; "
                f"available: {tools.names()}"
            )
        self._tools = tools
        self._llm_settings = llm_settings
        self._allowed = orchestrator.react_tools

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
        messages = self._messages(query, turns, last=last)
        metered = await self._llm.call(
            ctx,
            messages,
            tier=self._llm_settings.default_tier,
            response_format=STEP_FORMAT,
        )
        step = _parse(metered.response.content)
        if step.action is None or last:
            answer = step.answer or metered.response.content
            await self._journal.finished(
                ctx.tenant_id, ctx.task_id, TaskStatus.COMPLETED, result=answer, call=metered.record
            )
            return ReactStepResult(answer=answer)
        await self._journal.llm_call(ctx.tenant_id, ctx.task_id, metered.record)
        observation = await self._act(ctx, step.action)
        turn = ReactTurn(
            thought=step.thought,
            tool=step.action.tool,
            arguments=step.action.arguments,
            observation=observation,
        )
        await self._journal.event(
            ctx.tenant_id,
            ctx.task_id,
            EventType.REACT_STEP,
            {
                "step": len(turns) + 1,
                "thought": step.thought[:500],
                "tool": turn.tool,
                "arguments": turn.arguments,
                "observation": observation[:500],
            },
        )
        return ReactStepResult(turn=turn)

    def _messages(
        self, query: str, turns: tuple[ReactTurn, ...], *, last: bool
    ) -> tuple[ChatMessage, ...]:
        messages = [
            ChatMessage(
                role="system",
                content=react_prompt(self._tools.describe(self._allowed), last=last),
            ),
            ChatMessage(role="user", content=query),
        ]
        for turn in turns:
            said = ReactStep(
                thought=turn.thought, action=ToolCall(tool=turn.tool, arguments=turn.arguments)
            )
            messages.append(ChatMessage(role="assistant", content=said.model_dump_json()))
            messages.append(ChatMessage(role="user", content=f"Observation: {turn.observation}"))
        return tuple(messages)

    async def _act(self, ctx: CallContext, call: ToolCall) -> str:
        """Run the tool; a refusal is an observation the agent can react to, but a policy
        denial ends the task (PolicyDenied) with the policy's reason."""
        if call.tool not in self._allowed:
            return f"error: tool {call.tool!r} is not available; use one of {list(self._allowed)}"
        if self._authorizer is not None and ctx.actor is not None:
            try:
                facts = await self._tools.policy_facts(call.tool, call.arguments)
            except (InvalidInput, NotFound) as exc:
                return f"error: {exc.message}"
            request = {
                **facts,
                "tool": {"name": call.tool},
                "arguments": call.arguments,
                "argument_bytes": len(json.dumps(call.arguments)),
                "sandboxed": self._tools.sandboxed(call.tool),
            }
            await self._authorizer.require("tool.invoke", ctx.actor, request, task_id=ctx.task_id)
        try:
            return await self._tools.call(call.tool, call.arguments)
        except (InvalidInput, NotFound) as exc:
            return f"error: {exc.message}"


def _parse(content: str) -> ReactStep:
    """The model's step; text that is not a step is taken as its answer."""
    try:
        return ReactStep.model_validate_json(content)
    except ValidationError:
        return ReactStep(answer=content)
