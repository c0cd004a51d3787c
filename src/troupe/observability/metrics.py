"""Every Prometheus metric of Troupe, declared once (docs/observability.md lists them with
their meaning). Labels stay low-cardinality: no task, session, user or tenant-chosen ids;
``tenant`` is a tenant id (as many values as tenants), ``tool`` a registered tool's
name, ``provider`` and ``model`` configured ones."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "troupe_http_requests_total",
    "HTTP requests answered by the API, by route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "troupe_http_request_duration_seconds",
    "Time to answer an HTTP request (for SSE: time to the first byte).",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
TASKS_SUBMITTED = Counter(
    "troupe_tasks_submitted_total",
    "Tasks accepted by the API.",
    ["strategy"],
)
TASKS_FINISHED = Counter(
    "troupe_tasks_finished_total",
    "Tasks that reached a terminal status.",
    ["strategy", "status"],
)
TASK_SECONDS = Histogram(
    "troupe_task_duration_seconds",
    "Submit-to-terminal time of a task.",
    ["strategy", "status"],
    buckets=_LATENCY_BUCKETS,
)
LLM_TOKENS = Counter(
    "troupe_llm_tokens_total",
    "Tokens reported by providers, by tenant, model and kind (prompt, completion).",
    ["tenant", "provider", "model", "kind"],
)
LLM_COST = Counter(
    "troupe_llm_cost_micro_usd_total",
    "Cost of provider calls in micro-dollars, by tenant and model.",
    ["tenant", "provider", "model"],
)
BUDGET_DAILY_UTILIZATION = Gauge(
    "troupe_budget_daily_utilization_ratio",
    "Share of the tenant's daily token budget used today (UTC), after its latest call.",
    ["tenant"],
)
BUDGET_REFUSALS = Counter(
    "troupe_budget_refusals_total",
    "Model calls not made because a budget had no room (task or tenant day).",
    [],
)
POLICY_DECISIONS = Counter(
    "troupe_policy_decisions_total",
    "Policy decisions by action and result (allow, approval, deny).",
    ["action", "result"],
)
AUTH_FAILURES = Counter(
    "troupe_auth_failures_total",
    "API requests answered 401, by code (auth_required, auth_malformed, auth_invalid, "
    "auth_revoked, auth_expired).",
    ["code"],
)
LIMIT_REJECTIONS = Counter(
    "troupe_limit_rejections_total",
    "API requests answered 429, by code (rate_limited, too_many_tasks, budget_exhausted).",
    ["code"],
)
LLM_CACHE_LOOKUPS = Counter(
    "troupe_llm_cache_lookups_total",
    "Prompt cache lookups by result (hit, miss); a hit replaces a provider call.",
    ["result"],
)
LLM_PROVIDER_ERRORS = Counter(
    "troupe_llm_provider_errors_total",
    "Failed provider call attempts, by provider and error code.",
    ["provider", "code"],
)
LLM_FALLBACKS = Counter(
    "troupe_llm_fallbacks_total",
    "Calls that moved on from a candidate to the next, by the provider left and why.",
    ["provider", "reason"],
)
LLM_BREAKER_OPEN = Gauge(
    "troupe_llm_breaker_open",
    "1 while a provider's circuit breaker keeps calls away (open or probing), else 0.",
    ["provider"],
)
LLM_FIRST_TOKEN_SECONDS = Histogram(
    "troupe_llm_first_token_seconds",
    "Time from a streamed provider call's start to its first piece of text.",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
LLM_CALL_SECONDS = Histogram(
    "troupe_llm_call_duration_seconds",
    "Latency of provider calls.",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)

BUILD = Info("troupe_build", "The running Troupe: version and role (serve, api, worker).")
TASK_QUEUE_SECONDS = Histogram(
    "troupe_task_queue_seconds",
    "Time a task waited from submission to its first agent step.",
    ["strategy"],
    buckets=_LATENCY_BUCKETS,
)
AGENT_SECONDS = Histogram(
    "troupe_agent_duration_seconds",
    "Time of one agent activity attempt (simple agent, judge, planner, plan node, "
    "synthesis, react step), by outcome (ok, error).",
    ["agent", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
ACTIVITY_RETRIES = Counter(
    "troupe_activity_retries_total",
    "Activity attempts after the first (Temporal retried them), by activity.",
    ["activity"],
)
TOOL_CALLS = Counter(
    "troupe_tool_calls_total",
    "Tool calls agents made, by tool and outcome (ok, error).",
    ["tool", "outcome"],
)
TOOL_SECONDS = Histogram(
    "troupe_tool_call_duration_seconds",
    "Time of one tool call.",
    ["tool"],
    buckets=_LATENCY_BUCKETS,
)
SANDBOX_RUNS = Counter(
    "troupe_sandbox_runs_total",
    "Sandbox runs by outcome (ok, error: a non-zero exit, killed).",
    ["outcome"],
)
SANDBOX_KILLS = Counter(
    "troupe_sandbox_kills_total",
    "Sandbox runs stopped by a limit, by reason (cpu, timeout, memory, disk, hard_timeout).",
    ["reason"],
)
SANDBOX_FUEL = Histogram(
    "troupe_sandbox_fuel",
    "Fuel (wasmtime instructions, beyond start-up) one sandbox run used.",
    [],
    buckets=(1e6, 1e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2e9, 5e9),
)
SANDBOX_SECONDS = Histogram(
    "troupe_sandbox_run_duration_seconds",
    "Wall time of one sandbox run.",
    [],
    buckets=_LATENCY_BUCKETS,
)
MEMORY_OPERATIONS = Counter(
    "troupe_memory_operations_total",
    "Vector memory operations by kind (remember, recall) and outcome (ok, error).",
    ["operation", "outcome"],
)
SESSION_SUMMARIES = Counter(
    "troupe_session_summaries_total",
    "Summaries of older session turns written by the summary tier.",
    [],
)


# The label values each labelled metric can take that are known up front. Exporting them
# at zero from the start lets rates and alerts see the first event, not only the second.
_STRATEGIES = ("simple", "dag", "react")
_ENDINGS = ("completed", "failed", "cancelled", "budget_exceeded", "rejected")
_AGENTS = ("simple", "judge", "planner", "node", "synthesis", "react_step")
_ACTIVITIES = (
    "run_simple_agent",
    "judge_strategy",
    "plan_task",
    "run_node",
    "synthesize",
    "react_step",
)
_KILL_REASONS = ("cpu", "timeout", "memory", "disk", "hard_timeout")
_POLICY_ACTIONS = ("task.submit", "session.access", "tool.invoke", "model.use")


_PROVIDER_ERRORS = (
    "provider_rate_limited",
    "provider_unavailable",
    "provider_timeout",
    "provider_unreachable",
    "provider_auth_failed",
    "provider_rejected",
    "provider_bad_answer",
)
_AUTH_FAILURES = ("auth_required", "auth_malformed", "auth_invalid", "auth_revoked", "auth_expired")


def initialize(models: Iterable[tuple[str, str]]) -> None:
    """Create every known series at zero (``models``: the configured (provider, model)
    pairs)."""
    for strategy in _STRATEGIES:
        TASKS_SUBMITTED.labels(strategy=strategy)
        TASK_QUEUE_SECONDS.labels(strategy=strategy)
        for status in _ENDINGS:
            TASKS_FINISHED.labels(strategy=strategy, status=status)
            TASK_SECONDS.labels(strategy=strategy, status=status)
    for agent in _AGENTS:
        for outcome in ("ok", "error"):
            AGENT_SECONDS.labels(agent=agent, outcome=outcome)
    for activity in _ACTIVITIES:
        ACTIVITY_RETRIES.labels(activity=activity)
    for reason in _KILL_REASONS:
        SANDBOX_KILLS.labels(reason=reason)
    for outcome in ("ok", "error", "killed"):
        SANDBOX_RUNS.labels(outcome=outcome)
    for code in ("rate_limited", "too_many_tasks", "budget_exhausted"):
        LIMIT_REJECTIONS.labels(code=code)
    for action in _POLICY_ACTIONS:
        for result in ("allow", "approval", "deny"):
            POLICY_DECISIONS.labels(action=action, result=result)
    for result in ("hit", "miss"):
        LLM_CACHE_LOOKUPS.labels(result=result)
    for operation in ("remember", "recall"):
        for outcome in ("ok", "error"):
            MEMORY_OPERATIONS.labels(operation=operation, outcome=outcome)
    for code in _AUTH_FAILURES:
        AUTH_FAILURES.labels(code=code)
    pairs = set(models)
    for provider in {provider for provider, _ in pairs}:
        LLM_BREAKER_OPEN.labels(provider=provider).set(0)
        for code in _PROVIDER_ERRORS:
            LLM_PROVIDER_ERRORS.labels(provider=provider, code=code)
        for reason in (*_PROVIDER_ERRORS, "circuit_open"):
            LLM_FALLBACKS.labels(provider=provider, reason=reason)
    for provider, model in pairs:
        LLM_CALL_SECONDS.labels(provider=provider, model=model)
        LLM_FIRST_TOKEN_SECONDS.labels(provider=provider, model=model)
