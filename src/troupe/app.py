"""The composition root: every long-lived object of a process is built here, once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from troupe.agents.memory import MemoryKeeper
from troupe.auth.authenticator import Authenticator
from troupe.config import LLMSettings, ProviderSettings, Settings
from troupe.errors import Unavailable
from troupe.llm.base import LLMProvider
from troupe.llm.cache import MemoryPromptCache, PromptCache, RedisPromptCache
from troupe.llm.embeddings import build_embedder
from troupe.llm.providers.simulation import SimulationProvider
from troupe.llm.router import LLMRouter
from troupe.llm.secrets import provider_keys
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.launcher import TaskLauncher
from troupe.orchestrator.worker import build_worker
from troupe.policy.authorizer import Authorizer
from troupe.policy.base import PolicyEngine
from troupe.policy.opa import OpaHttpEngine
from troupe.policy.rego import RegoEngine
from troupe.sandbox.runner import Sandbox
from troupe.storage.audit import DecisionLog
from troupe.storage.database import create_engine
from troupe.storage.kv.base import EventFanout, RateLimiter, SessionCache
from troupe.storage.kv.memory import MemoryEventFanout, MemoryRateLimiter, MemorySessionCache
from troupe.storage.repositories import SqlTaskStore
from troupe.storage.sessions import SqlSessionStore
from troupe.storage.tenancy import TenantDirectory
from troupe.storage.vectors import VectorMemory
from troupe.tools.base import ToolRegistry
from troupe.tools.calculator import Calculator
from troupe.tools.http_fetch import HttpFetch
from troupe.tools.memory_search import MemorySearch
from troupe.tools.python_exec import PythonExec

if TYPE_CHECKING:
    from troupe.storage.kv.ledger import RedisBudgetLedger
    from troupe.tools.mcp import McpServers, McpTool

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """What the API and the worker of one process share."""

    settings: Settings
    store: SqlTaskStore
    directory: TenantDirectory
    authenticator: Authenticator
    fanout: EventFanout
    rate_limiter: RateLimiter
    router: LLMRouter
    prompt_cache: PromptCache | None
    journal: TaskJournal
    authorizer: Authorizer
    decisions: DecisionLog
    sandbox: Sandbox
    temporal: Client
    launcher: TaskLauncher
    sessions: SqlSessionStore
    keeper: MemoryKeeper
    vectors: VectorMemory | None = None  # None: memory.enabled is false
    mcp: McpServers | None = None  # connected by a worker

    @classmethod
    async def from_settings(cls, settings: Settings, *, temporal_address: str) -> Services:
        engine = create_engine(
            settings.database_url,
            pool_size=settings.database.pool_size,
            echo=settings.database.echo,
        )
        fanout = build_fanout(settings)
        store = SqlTaskStore(
            engine,
            alert_threshold=settings.budgets.alert_threshold,
            on_events=fanout.offer,
        )
        directory = TenantDirectory(engine)
        authenticator = Authenticator.from_settings(directory, settings)
        rate_limiter = build_rate_limiter(settings)
        router = build_router(settings)
        prompt_cache = build_prompt_cache(settings)
        sessions = SqlSessionStore(
            engine, build_session_cache(settings), max_turns=settings.sessions.max_turns
        )
        vectors = await open_vector_memory(settings)
        keeper = MemoryKeeper(sessions, vectors)
        journal = TaskJournal(
            store,
            fanout,
            redis_ledger=build_redis_ledger(settings),
            alert_threshold=settings.budgets.alert_threshold,
            on_completed=keeper.task_completed,
        )
        decisions = DecisionLog(engine)
        authorizer = Authorizer(
            build_policy_engine(settings), decisions, on_denied=journal.policy_denied
        )
        client = await connect_temporal(
            temporal_address,
            namespace=settings.temporal.namespace,
            timeout_s=settings.temporal.connect_timeout_s,
            traced=settings.tracing.enabled,
        )
        launcher = TaskLauncher(
            client=client, store=store, journal=journal, fanout=fanout, settings=settings
        )
        return cls(
            settings,
            store,
            directory,
            authenticator,
            fanout,
            rate_limiter,
            router,
            prompt_cache,
            journal,
            authorizer,
            decisions,
            build_sandbox(settings),
            client,
            launcher,
            sessions,
            keeper,
            vectors,
        )

    async def worker(self) -> Worker:
        """The Temporal worker, with the MCP servers' tools (connected now)."""
        mcp_tools: list[McpTool] = []
        if self.settings.tools.mcp_servers:
            # Imported only when configured: the mcp SDK costs ~1 s of start-up.
            from troupe.tools.mcp import McpServers

            self.mcp = McpServers(self.settings.tools.mcp_servers)
            mcp_tools = await self.mcp.connect()
        return build_worker(
            self.temporal,
            self.settings,
            router=self.router,
            journal=self.journal,
            tools=build_tools(self.settings, self.sandbox, mcp_tools, self.vectors),
            cache=self.prompt_cache,
            authorizer=self.authorizer,
            sessions=self.sessions,
            vectors=self.vectors,
        )

    async def aclose(self) -> None:
        await self.router.aclose()
        if self.prompt_cache is not None:
            await self.prompt_cache.aclose()
        await self.fanout.aclose()
        await self.rate_limiter.aclose()
        await self.journal.aclose()
        await self.authorizer.aclose()
        await self.decisions.aclose()
        await self.sandbox.aclose()
        if self.mcp is not None:
            await self.mcp.aclose()
        if self.vectors is not None:
            await self.vectors.aclose()
        await self.sessions.aclose()
        await self.directory.aclose()
        await self.store.aclose()


def build_sandbox(settings: Settings) -> Sandbox:
    """The sandbox's pool of workers; they start with the first run (compiling
    python.wasm once per deployment, then loading it from the cache)."""
    cache_dir = settings.sandbox.cache_dir or settings.data_dir / "sandbox-cache"
    return Sandbox(settings.sandbox, cache_dir)


def build_tools(
    settings: Settings,
    sandbox: Sandbox,
    mcp_tools: Iterable[McpTool] = (),
    vectors: VectorMemory | None = None,
) -> ToolRegistry:
    """The built-in tools (memory_search with a memory), and those of the MCP servers
    (connected by the caller)."""
    tools = settings.tools
    registry = ToolRegistry(
        [Calculator(), PythonExec(sandbox), HttpFetch(tools.http_fetch)],
        max_result_chars=tools.max_result_chars,
        timeout_s=tools.timeout_s,
    )
    if vectors is not None:
        registry.extend([MemorySearch(vectors, min_score=settings.memory.min_score)])
    registry.extend(mcp_tools)
    return registry


async def open_vector_memory(settings: Settings) -> VectorMemory | None:
    """The vector memory (None when disabled): Qdrant local mode in the data dir, or
    the server at ``memory.qdrant_url``."""
    if not settings.memory.enabled:
        return None
    embedder = build_embedder(settings.memory, settings.llm)
    return await VectorMemory.open(settings.memory, embedder, settings.data_dir)


def build_session_cache(settings: Settings) -> SessionCache:
    """Hot session state in Redis when configured (many processes), else in-process."""
    ttl_s = settings.sessions.cache_ttl_s
    if settings.redis.url is None:
        return MemorySessionCache(ttl_s=ttl_s, max_entries=settings.sessions.cache_max_sessions)
    from troupe.storage.kv.redis import RedisSessionCache

    return RedisSessionCache(settings.redis.url, ttl_s=ttl_s)


def build_fanout(settings: Settings) -> EventFanout:
    """Redis pub/sub when configured (many processes), else in-process."""
    if settings.redis.url is None:
        return MemoryEventFanout()
    # Imported only when configured: the redis client costs ~0.1 s of start-up.
    from troupe.storage.kv.redis import RedisEventFanout

    return RedisEventFanout(settings.redis.url)


def build_rate_limiter(settings: Settings) -> RateLimiter:
    """Token buckets in Redis when configured (many API processes), else in-process."""
    if settings.redis.url is None:
        return MemoryRateLimiter()
    from troupe.storage.kv.redis import RedisRateLimiter

    return RedisRateLimiter(settings.redis.url)


def build_policy_engine(settings: Settings) -> PolicyEngine:
    """The embedded regorus engine on ``policy.dir``, or a remote OPA server."""
    policy = settings.policy
    if policy.engine == "opa":
        assert policy.opa_url is not None  # the settings validate this
        return OpaHttpEngine(policy.opa_url, timeout_s=policy.timeout_s)
    return RegoEngine(policy.dir, reload_interval_s=policy.reload_interval_s)


def build_redis_ledger(settings: Settings) -> RedisBudgetLedger | None:
    """The budget ledger in Redis when ``budgets.ledger`` says so (else the database's)."""
    if settings.budgets.ledger != "redis":
        return None
    assert settings.redis.url is not None  # the settings validate this
    from troupe.storage.kv.ledger import RedisBudgetLedger

    return RedisBudgetLedger(settings.redis.url)


def build_prompt_cache(settings: Settings) -> PromptCache | None:
    """The prompt cache: None when disabled, Redis when configured, else in-process."""
    cache = settings.llm.cache
    if not cache.enabled:
        return None
    if settings.redis.url is None:
        return MemoryPromptCache(ttl_s=cache.ttl_s, max_entries=cache.max_entries)
    return RedisPromptCache(settings.redis.url, ttl_s=cache.ttl_s, max_entries=cache.max_entries)


def build_router(settings: Settings) -> LLMRouter:
    """Every configured provider behind the router; ConfigError for a missing key."""
    llm = settings.llm
    keys = provider_keys(llm)
    providers: dict[str, LLMProvider] = {}
    for name, config in llm.providers.items():
        providers[name] = _provider(name, config, keys.get(name), llm)
        if config.kind == "simulation":
            logger.warning(
                "LLM provider %r is a SIMULATION: its answers are generated locally and "
                "are not real model output; configure llm.providers and llm.tiers to use "
                "a real model.",
                name,
            )
    return LLMRouter(providers, llm)


def _provider(
    name: str, config: ProviderSettings, key: SecretStr | None, llm: LLMSettings
) -> LLMProvider:
    if config.kind == "simulation":
        return SimulationProvider(config.simulation or llm.simulation, name=name)
    if config.kind == "anthropic":
        # Imported on use: each SDK costs start-up time a simulation-only setup skips.
        from troupe.llm.providers.anthropic import AnthropicProvider

        assert key is not None  # provider_keys refuses an anthropic provider without one
        return AnthropicProvider(
            name, api_key=key, base_url=config.base_url, timeout_s=config.timeout_s
        )
    from troupe.llm.providers.openai import OpenAIProvider

    return OpenAIProvider(
        name,
        api_key=key,
        base_url=config.base_url,
        timeout_s=config.timeout_s,
        compatible=config.kind == "openai_compatible",
    )


async def connect_temporal(
    address: str, *, namespace: str, timeout_s: float, traced: bool = False
) -> Client:
    """Connect, retrying while the server starts; Unavailable after ``timeout_s``.
    ``traced``: carry the OpenTelemetry context into workflows and activities."""
    interceptors: list[Interceptor] = []
    if traced:
        from temporalio.contrib.opentelemetry import TracingInterceptor

        interceptors.append(TracingInterceptor())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await Client.connect(
                address,
                namespace=namespace,
                data_converter=pydantic_data_converter,
                interceptors=interceptors,
            )
        except RuntimeError as exc:
            if loop.time() >= deadline:
                raise Unavailable(
                    f"cannot reach Temporal at {address} within {timeout_s}s: {exc}",
                    code="engine_unavailable",
                ) from exc
            await asyncio.sleep(0.05)
