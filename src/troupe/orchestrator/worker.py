"""The Temporal worker that runs TaskWorkflow and its activities."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import (
    UnsandboxedWorkflowRunner,
    Worker,
    WorkerDeploymentConfig,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import troupe
from troupe.agents.memory import TaskContexts
from troupe.agents.metering import MeteredLLM
from troupe.agents.react import ReactAgent, ToolAgent
from troupe.agents.runtime import AgentRuntime
from troupe.config import Settings
from troupe.llm.cache import PromptCache
from troupe.llm.router import LLMRouter
from troupe.orchestrator.activities.task import TaskActivities
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.judge import StrategyJudge
from troupe.orchestrator.planner import Planner
from troupe.orchestrator.workflows.task import TaskWorkflow
from troupe.policy.authorizer import Authorizer
from troupe.storage.sessions import SqlSessionStore
from troupe.storage.vectors import VectorMemory
from troupe.tools.base import ToolRegistry


def build_worker(
    client: Client,
    settings: Settings,
    *,
    router: LLMRouter,
    journal: TaskJournal,
    tools: ToolRegistry,
    cache: PromptCache | None = None,
    authorizer: Authorizer | None = None,
    sessions: SqlSessionStore | None = None,
    vectors: VectorMemory | None = None,
) -> Worker:
    """A worker polling the task queue, with activities bound to their services.
    Without ``sessions``, tasks get no session context."""
    llm = MeteredLLM(
        router,
        settings.llm,
        journal.ledger,
        cache,
        on_fallback=journal.llm_fallback,
        authorizer=authorizer,
    )
    tool_agent = ToolAgent(
        llm, journal, tools, settings.llm, settings.orchestrator, authorizer=authorizer
    )
    activities = TaskActivities(
        AgentRuntime(llm, journal, settings.llm, settings.orchestrator, tool_agent),
        Planner(llm, journal, settings.orchestrator, authorizer=authorizer),
        ReactAgent(tool_agent, journal, settings.llm),
        StrategyJudge(llm, journal, settings.orchestrator),
        journal,
        heartbeat_s=settings.tasks.heartbeat_timeout_s / 3,
        contexts=TaskContexts(
            sessions=sessions,
            vectors=vectors,
            llm=llm,
            journal=journal,
            session_settings=settings.sessions,
            memory_settings=settings.memory,
        )
        if sessions is not None
        else None,
    )
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[TaskWorkflow],
        activities=[
            activities.run_simple_agent,
            activities.judge_strategy,
            activities.plan_task,
            activities.react_step,
            activities.run_node,
            activities.synthesize,
            activities.record_nodes_ended,
            activities.record_approval,
            activities.finish_task,
        ],
        max_concurrent_activities=settings.worker.max_concurrent_activities,
        max_concurrent_local_activities=settings.worker.max_concurrent_activities,
        # A whole layer of a plan starts eagerly, handed back with the workflow task's
        # reply, instead of 3 (the SDK default) eagerly and the rest through a poll.
        max_eager_activity_reservations_per_workflow_task=settings.orchestrator.max_parallel_agents,
        graceful_shutdown_timeout=timedelta(seconds=5),
        # An explicit version: without it the SDK hashes the code of every loaded
        # module to derive one, ~0.3 s of every start.
        deployment_config=WorkerDeploymentConfig(
            version=WorkerDeploymentVersion(deployment_name="troupe", build_id=troupe.__version__),
            use_worker_versioning=False,
        ),
        workflow_runner=_workflow_runner(settings.orchestrator.workflow_sandbox),
    )


def _workflow_runner(sandboxed: bool) -> WorkflowRunner:
    """Sandboxed: each workflow task runs under the sandbox's checks (clock, randomness,
    I/O refused), which cost ~15% of an embedded server's CPU on the DAG benchmark; the
    test suite's orchestrator runs this way. Otherwise plainly: the workflow code is
    Troupe's own, checked by those tests and by replaying recorded histories."""
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    # Our workflow modules keep no module-level state, so re-importing them for every
    # run buys nothing and costs milliseconds per workflow task; the runtime
    # restrictions still apply.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    )
