"""Agents: the simple agent, a plan node's agent, and the synthesis that fans them in.

Each records its own progress in the journal (start, metered call, output), so the
workflow needs no extra activity per status change.
"""

from __future__ import annotations

from troupe.agents.beliefs import beliefs_of
from troupe.agents.beliefs import render as render_beliefs
from troupe.agents.metering import CallContext, MeteredLLM
from troupe.agents.react import AGENT_PROMPT, ToolAgent
from troupe.config import LLMSettings, OrchestratorSettings
from troupe.domain import PlanNode, TaskStatus
from troupe.llm.messages import ChatMessage
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.payloads import Gap, NodeOutput

SIMPLE_PROMPT = (
    "You are a careful assistant working inside Troupe. Answer the task directly and "
    "concisely; say what you assumed."
)


class AgentRuntime:
    """Runs agents through the metered LLM and records what they did."""

    def __init__(
        self,
        llm: MeteredLLM,
        journal: TaskJournal,
        llm_settings: LLMSettings,
        orchestrator: OrchestratorSettings,
        tool_agent: ToolAgent | None = None,
    ) -> None:
        self._tool_agent = tool_agent
        self._llm = llm
        self._journal = journal
        self._llm_settings = llm_settings
        self._orchestrator = orchestrator

    async def answer(self, ctx: CallContext, query: str, *, attempt: int) -> str:
        """The simple strategy: one agent answers; the task completes with its answer."""
        task = await self._journal.started(ctx.tenant_id, ctx.task_id, attempt=attempt)
        if task.status.terminal:
            # An earlier attempt ended the task and crashed before Temporal heard of it.
            return task.result or ""
        messages = (
            ChatMessage(role="system", content=SIMPLE_PROMPT),
            ChatMessage(role="user", content=query),
        )
        metered = await self._llm.call(ctx, messages, tier=self._llm_settings.default_tier)
        content = metered.response.content
        await self._journal.finished(
            ctx.tenant_id, ctx.task_id, TaskStatus.COMPLETED, result=content, call=metered.record
        )
        return content

    async def run_node(
        self,
        ctx: CallContext,
        query: str,
        node: PlanNode,
        inputs: tuple[NodeOutput, ...],
    ) -> str:
        """One plan node: its agent works on its part with its dependencies' outputs."""
        start = await self._journal.node_started(ctx.tenant_id, ctx.task_id, node.id)
        if start.output is not None:
            # An earlier attempt finished this node and crashed before Temporal heard of
            # it: hand back its output rather than paying for the same work twice.
            return start.output
        system = f"You are {node.role}, one agent of a team working on a task. {node.instructions}"
        user = f"Task: {query}"
        if inputs:
            shared = "\n\n".join(f"## {i.node_id} ({i.role})\n{i.output}" for i in inputs)
            user += f"\n\nWhat the agents you depend on found:\n\n{shared}"
        offered = self._tool_agent.offered(ctx.tenant_id, node.tools) if self._tool_agent else []
        if self._tool_agent is not None and offered:
            answer, call, turns = await self._tool_agent.run(
                ctx,
                system=f"{system}\n\n{AGENT_PROMPT}",
                query=user,
                offered=offered,
                tier=node.tier,
            )
            beliefs = beliefs_of(turns)
            if beliefs.facts:  # what the answer rests on travels with it to synthesis
                answer += "\n\n" + render_beliefs(beliefs)
        else:
            messages = (
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=user),
            )
            metered = await self._llm.call(ctx, messages, tier=node.tier)
            answer, call = metered.response.content, metered.record
        output = answer[: self._orchestrator.node_output_chars]
        await self._journal.node_completed(ctx.tenant_id, ctx.task_id, node.id, output, call)
        return output

    async def synthesize(
        self,
        ctx: CallContext,
        query: str,
        how: str,
        outputs: tuple[NodeOutput, ...],
        gaps: tuple[Gap, ...],
    ) -> str:
        """Fan in: one answer from every node's output; completes the task."""
        task = await self._journal.task(ctx.tenant_id, ctx.task_id)
        if task.status.terminal:  # an earlier attempt finished it and then crashed
            return task.result or ""
        parts = [f"Task: {query}", "Agent outputs:"]
        parts += [f"## {o.node_id} ({o.role})\n{o.output}" for o in outputs]
        if gaps:
            missing = "\n".join(f"- {g.node_id}: {g.reason}" for g in gaps)
            parts.append(f"Missing (say so in the answer):\n{missing}")
        messages = (
            ChatMessage(
                role="system",
                content=f"You combine the work of several agents into the final answer. {how}",
            ),
            ChatMessage(role="user", content="\n\n".join(parts)),
        )
        metered = await self._llm.call(
            ctx,
            messages,
            tier=self._orchestrator.synthesis_tier,
        )
        content = metered.response.content
        await self._journal.finished(
            ctx.tenant_id, ctx.task_id, TaskStatus.COMPLETED, result=content, call=metered.record
        )
        return content
