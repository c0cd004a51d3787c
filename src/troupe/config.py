"""One nested Settings for the whole platform.

Sources, strongest first: explicit overrides from the command line, environment
variables ``TROUPE_<SECTION>__<KEY>``, the YAML file (``config/multi-agent.yaml`` by
default), then the defaults below, which equal the shipped YAML. An invalid value fails
at start with :class:`ConfigError` naming the key.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from troupe.domain import ModelTier
from troupe.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/multi-agent.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=65536, ge=1024)


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    # Also write to this file, rotated at max_bytes with backup_count old files kept.
    file: Path | None = None
    max_bytes: int = Field(default=50 * 1_048_576, ge=1024)
    backup_count: int = Field(default=5, ge=0, le=1000)


class TracingSettings(_Section):
    """OpenTelemetry traces: one per task, from the HTTP request through every activity,
    LLM call, tool call and sandbox run (docs/observability.md)."""

    enabled: bool = False
    # otlp: OTLP over HTTP to otlp_endpoint (Jaeger, Tempo, any collector); console:
    # spans printed to stderr (development).
    exporter: Literal["otlp", "console"] = "otlp"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "troupe"
    # Share of traces kept (parent-based: a task's spans are all kept or all dropped).
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class DatabaseSettings(_Section):
    url: str | None = None
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False
    # Where pg_dump and pg_restore are (troupe backup/restore on PostgreSQL); None: the
    # ones pgserver ships, if installed, else PATH. They must not be older than the server.
    pg_bin_dir: Path | None = None

    @model_validator(mode="after")
    def _known_driver(self) -> DatabaseSettings:
        if self.url is not None and not self.url.startswith(
            ("sqlite+aiosqlite://", "postgresql+asyncpg://")
        ):
            raise ValueError(
                "url must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                f"(got {self.url.split('://', 1)[0]}://)"
            )
        return self


class TemporalSettings(_Section):
    address: str | None = None
    namespace: str = "default"
    task_queue: str = "troupe-tasks"
    embedded_port: int = Field(default=0, ge=0, le=65535)
    connect_timeout_s: float = Field(default=15, gt=0)


class RedisSettings(_Section):
    url: str | None = None


class EventSettings(_Section):
    poll_interval_ms: int = Field(default=500, ge=10, le=60_000)
    ping_interval_s: int = Field(default=15, ge=1)


class LimitSettings(_Section):
    """Per tenant: a token bucket for API requests, and a cap on unfinished tasks.
    The ``key_`` limits apply to each API key on top (None: only the tenant's); a
    tenant or a key may carry its own values (``troupe tenant``/``troupe key``)."""

    requests_per_s: float = Field(default=200, gt=0)
    burst: int = Field(default=400, ge=1)
    max_concurrent_tasks: int = Field(default=200, ge=1)
    key_requests_per_s: float | None = Field(default=None, gt=0)
    key_burst: int | None = Field(default=None, ge=1)
    key_max_concurrent_tasks: int | None = Field(default=None, ge=1)


class JwtSettings(_Section):
    """Bearer JWTs as an alternative to API keys, from an identity provider."""

    enabled: bool = False
    algorithm: Literal["HS256", "RS256"] = "HS256"
    # HS256: the shared secret, read from this environment variable (never from here).
    secret_env: str = Field(default="TROUPE_JWT_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # RS256: the identity provider's public key (PEM file).
    public_key_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    leeway_s: float = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _rs256_has_a_key(self) -> JwtSettings:
        if self.enabled and self.algorithm == "RS256" and self.public_key_file is None:
            raise ValueError("RS256 needs public_key_file")
        return self


class HttpFetchSettings(_Section):
    timeout_s: float = Field(default=10, gt=0)
    max_bytes: int = Field(default=1_048_576, ge=1)
    max_redirects: int = Field(default=3, ge=0, le=10)
    # Hosts the tool may reach on a non-public address (an intranet service). The
    # policy is asked as well; the shipped one allows no such address.
    allow_private_hosts: tuple[str, ...] = ()


class McpServerSettings(_Section):
    """One MCP server whose tools agents may use, named ``<name>__<tool>``."""

    # Letters, digits and single hyphens: the tool names stay valid for every provider
    # and the ``__`` between server and tool stays unambiguous.
    name: str = Field(pattern=r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", max_length=24)
    transport: Literal["stdio", "http"]
    # stdio: the command that starts the server, with its arguments and environment
    # (nothing else of the host's environment but PATH-like basics is passed on).
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    # http: the streamable HTTP endpoint, e.g. https://tools.internal/mcp.
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # Tenants that see its tools; empty: every tenant. The policy decides per call.
    tenants: tuple[str, ...] = ()
    # Only these of its tools (empty: all it lists).
    include: tuple[str, ...] = ()
    connect_timeout_s: float = Field(default=20, gt=0)
    # How far its answers are trusted as facts (BeliefState), 0..1.
    confidence: float = Field(default=0.7, ge=0, le=1)

    @model_validator(mode="after")
    def _has_its_transport(self) -> McpServerSettings:
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"MCP server {self.name!r}: stdio needs a command")
        if self.transport == "http" and not self.url:
            raise ValueError(f"MCP server {self.name!r}: http needs a url")
        return self


class ToolSettings(_Section):
    http_fetch: HttpFetchSettings = HttpFetchSettings()
    # A call that outlives this is stopped; the agent reads that it timed out.
    timeout_s: float = Field(default=30, gt=0)
    # What an agent reads of a result, at most.
    max_result_chars: int = Field(default=4000, ge=100)
    mcp_servers: tuple[McpServerSettings, ...] = ()

    @model_validator(mode="after")
    def _mcp_names_are_unique(self) -> ToolSettings:
        names = [server.name for server in self.mcp_servers]
        if len(names) != len(set(names)):
            raise ValueError("two MCP servers have the same name")
        return self


class SandboxSettings(_Section):
    """Limits of one run of untrusted code (docs/sandbox.md)."""

    memory_mb: int = Field(default=256, ge=16, le=4096)
    # CPU as wasmtime fuel, beyond the interpreter's start-up (~250 M).
    fuel: int = Field(default=2_000_000_000, ge=1_000_000)
    timeout_s: float = Field(default=10, gt=0)
    stdout_bytes: int = Field(default=65_536, ge=1)
    stderr_bytes: int = Field(default=65_536, ge=1)
    file_bytes: int = Field(default=1_048_576, ge=1)
    max_files: int = Field(default=20, ge=0)
    # All of the scratch directory together, checked while the code runs: a run that
    # writes more is stopped ("disk"), so no run can fill the host's disk.
    scratch_bytes: int = Field(default=64 * 1_048_576, ge=1024)
    max_code_chars: int = Field(default=20_000, ge=1)
    max_concurrent_runs: int = Field(default=2, ge=1)
    # A worker process serves this many runs (each on a fresh guest), then is replaced.
    runs_per_worker: int = Field(default=50, ge=1)
    # The compiled python.wasm; None: data_dir/sandbox-cache.
    cache_dir: Path | None = None


class PolicySettings(_Section):
    """Who may do what: Rego policies, embedded (regorus) or on an OPA server."""

    engine: Literal["embedded", "opa"] = "embedded"
    # The policy files (*.rego, their *_test.rego and data.json) for the embedded engine.
    dir: Path = Path("policies")
    opa_url: str | None = None
    timeout_s: float = Field(default=2.0, gt=0)
    # How often the embedded engine looks for changed files (hot reload).
    reload_interval_s: float = Field(default=1.0, gt=0)
    # Tenants created without a plan get this one (a key of data.json's plans).
    default_plan: str = "standard"

    @model_validator(mode="after")
    def _opa_has_a_url(self) -> PolicySettings:
        if self.engine == "opa" and not self.opa_url:
            raise ValueError("engine opa needs opa_url")
        return self


class AuthSettings(_Section):
    """Every API request (but health and metrics) carries an API key or a JWT."""

    # `troupe serve` with the embedded Temporal creates the tenant `local` and a key for
    # it (printed, and saved in data_dir/dev-api-key). Production roles never do.
    dev_tenant: bool = True
    jwt: JwtSettings = JwtSettings()


class BudgetSettings(_Section):
    """Limits beyond each task's own: per tenant and UTC day, per session, per plan node.
    None: no such limit. A tenant may have its own daily limits."""

    tenant_daily_tokens: int | None = Field(default=10_000_000, ge=1)
    tenant_daily_micro_usd: int | None = Field(default=None, ge=1)
    session_tokens: int | None = Field(default=None, ge=1)
    session_micro_usd: int | None = Field(default=None, ge=1)
    node_tokens: int | None = Field(default=None, ge=1)
    alert_threshold: float = Field(default=0.8, gt=0, le=1)
    # Where counters and reservations live: with the tasks in the database (the
    # default), or in Redis (needs redis.url), shared by every worker.
    ledger: Literal["database", "redis"] = "database"


class TaskSettings(_Section):
    max_query_chars: int = Field(default=8000, ge=1)
    default_token_budget: int = Field(default=20_000, ge=1)
    max_token_budget: int = Field(default=1_000_000, ge=1)
    default_cost_budget_micro_usd: int | None = Field(default=None, ge=1)
    max_cost_budget_micro_usd: int | None = Field(default=None, ge=1)
    attempt_timeout_s: float = Field(default=300, gt=0)
    heartbeat_timeout_s: float = Field(default=5, gt=0)
    workflow_task_timeout_s: float = Field(default=3, gt=0, le=120)
    max_attempts: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _default_within_max(self) -> TaskSettings:
        if self.default_token_budget > self.max_token_budget:
            raise ValueError("default_token_budget must not exceed max_token_budget")
        return self


class SimulationSettings(_Section):
    latency_ms: int = Field(default=0, ge=0)
    failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_limit_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0
    plan_width: int = Field(default=3, ge=1, le=32)


class PromptCacheSettings(_Section):
    enabled: bool = True
    ttl_s: float = Field(default=3600, gt=0)
    max_entries: int = Field(default=10_000, ge=1)


class ModelPrice(_Section):
    """Integer micro-dollars per million tokens; ``cached_input`` prices the prompt
    tokens a provider served from its own prompt cache (``input`` when unset)."""

    input: int = Field(ge=0)
    output: int = Field(ge=0)
    cached_input: int | None = Field(default=None, ge=0)


ProviderKind = Literal["simulation", "openai", "anthropic", "openai_compatible"]

# The environment variable a provider's key is read from unless api_key_env names one.
DEFAULT_KEY_ENV: dict[ProviderKind, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
}


class ProviderSettings(_Section):
    """One provider endpoint. Keys never live here: see ``api_key_env`` and
    ``llm.secrets_file``."""

    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(default=60, gt=0)
    # Stream answers (time to first token is measured; a long answer never waits on one
    # read); off for a compatible server whose streaming is broken. Simulation ignores it.
    stream: bool = True
    # kind simulation: its own behaviour instead of llm.simulation (to rehearse fallback)
    simulation: SimulationSettings | None = None

    @model_validator(mode="after")
    def _fits_its_kind(self) -> ProviderSettings:
        if self.kind == "openai_compatible" and self.base_url is None:
            raise ValueError("an openai_compatible provider needs base_url")
        if self.kind != "simulation" and self.simulation is not None:
            raise ValueError("only a simulation provider takes simulation settings")
        if self.kind == "simulation" and (self.base_url or self.api_key_env):
            raise ValueError("a simulation provider has no base_url and no key")
        return self

    @property
    def key_env(self) -> str | None:
        return self.api_key_env or DEFAULT_KEY_ENV.get(self.kind)


class TierCandidate(_Section):
    """A model a tier may use. Lower priority numbers are tried first; among equal
    priorities, the weight decides how often each goes first."""

    provider: str
    model: str
    priority: int = Field(default=1, ge=0)
    weight: int = Field(default=1, ge=1)


class RetrySettings(_Section):
    attempts: int = Field(default=3, ge=1, le=10)
    initial_backoff_ms: int = Field(default=200, ge=0)
    max_backoff_ms: int = Field(default=5_000, ge=0)


class BreakerSettings(_Section):
    failure_threshold: int = Field(default=5, ge=1)
    window_s: float = Field(default=60, gt=0)
    cooldown_s: float = Field(default=30, gt=0)


def _default_tiers() -> dict[ModelTier, tuple[TierCandidate, ...]]:
    return {
        "small": (TierCandidate(provider="simulation", model="sim-small"),),
        "medium": (TierCandidate(provider="simulation", model="sim-small"),),
        "large": (TierCandidate(provider="simulation", model="sim-large"),),
    }


class LLMSettings(_Section):
    providers: dict[str, ProviderSettings] = Field(
        default_factory=lambda: {"simulation": ProviderSettings(kind="simulation")}
    )
    tiers: dict[ModelTier, tuple[TierCandidate, ...]] = Field(default_factory=_default_tiers)
    fallback_to_lower_tier: bool = True
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    secrets_file: Path | None = None
    default_tier: ModelTier = "medium"
    max_tokens: int = Field(default=512, ge=1)
    simulation: SimulationSettings = SimulationSettings()
    cache: PromptCacheSettings = PromptCacheSettings()
    pricing: dict[str, ModelPrice] = Field(
        default_factory=lambda: {
            "sim-small": ModelPrice(input=150_000, output=600_000),
            "sim-large": ModelPrice(input=2_500_000, output=10_000_000),
        }
    )

    @model_validator(mode="after")
    def _tiers_are_complete_known_and_priced(self) -> LLMSettings:
        for name in self.providers:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"provider name {name!r}: use letters, digits, - and _")
        missing = [t for t in ("small", "medium", "large") if not self.tiers.get(t)]
        if missing:
            raise ValueError(f"tiers needs at least one model for {', '.join(missing)}")
        for tier, candidates in self.tiers.items():
            for candidate in candidates:
                if candidate.provider not in self.providers:
                    raise ValueError(
                        f"the {tier} tier names provider {candidate.provider!r}, "
                        "which llm.providers does not define"
                    )
                if candidate.model not in self.pricing:
                    raise ValueError(
                        f"the {tier} tier's model {candidate.model!r} has no llm.pricing "
                        "entry; every call must be costed"
                    )
        return self

    def model_for(self, tier: ModelTier) -> str:
        """The model a tier asks for first (its lowest priority number, then listed
        first): what a request names before routing picks who serves it."""
        return min(self.tiers[tier], key=lambda c: c.priority).model


class OrchestratorSettings(_Section):
    max_parallel_agents: int = Field(default=5, ge=1, le=64)
    max_nodes: int = Field(default=8, ge=1, le=64)
    failure_policy: Literal["fail", "continue"] = "fail"
    planner_tier: ModelTier = "small"
    synthesis_tier: ModelTier = "medium"
    node_output_chars: int = Field(default=4000, ge=100)
    dag_min_words: int = Field(default=60, ge=1)
    dag_min_markers: int = Field(default=3, ge=1)
    approval_timeout_s: float = Field(default=3600, gt=0)
    complexity_judge: bool = False
    react_max_steps: int = Field(default=6, ge=1, le=50)
    react_tools: tuple[str, ...] = ("calculator",)
    # Agent steps as local activities of the worker running the task's workflow;
    # false: regular activities, dispatched through the Temporal server (docs/orchestration.md).
    local_activities: bool = True
    # Run workflow code in temporalio's sandbox, which refuses non-deterministic calls
    # (clock, randomness, I/O) as they happen. The workflow code is Troupe's own: the
    # test suite runs it sandboxed, so production need not pay for the checks.
    workflow_sandbox: bool = False


class EmbeddingSettings(_Section):
    """How texts become vectors for the memory (docs/memory.md).

    ``hashing``: offline, no download: words and their character trigrams hashed into
    ``dimensions`` buckets (lexical similarity, no synonyms). ``openai``: the
    embeddings endpoint of ``provider`` (an ``llm.providers`` entry of kind openai or
    openai_compatible: its base URL and key). ``minilm``: all-MiniLM-L6-v2 on the CPU
    (the ``local-embeddings`` extra; 384 dimensions).
    """

    kind: Literal["hashing", "openai", "minilm"] = "hashing"
    provider: str | None = None
    model: str = "text-embedding-3-small"
    dimensions: int = Field(default=384, ge=8, le=8192)
    batch_size: int = Field(default=64, ge=1, le=2048)

    @model_validator(mode="after")
    def _openai_names_its_provider(self) -> EmbeddingSettings:
        if self.kind == "openai" and not self.provider:
            raise ValueError("kind openai needs provider (an llm.providers entry)")
        if self.kind == "minilm" and self.dimensions != 384:
            raise ValueError("kind minilm gives 384 dimensions; set dimensions: 384")
        return self


class MemorySettings(_Section):
    """Vector memory in Qdrant: session turns, task results, documents users save."""

    enabled: bool = True
    # null: Qdrant local mode on disk in data_dir/qdrant (one process); a URL: a server.
    qdrant_url: str | None = None
    qdrant_api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    collection_prefix: str = Field(default="troupe", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    embeddings: EmbeddingSettings = EmbeddingSettings()
    # Memories put into a session task's context, at most, and the least similarity.
    recall_limit: int = Field(default=4, ge=0, le=50)
    min_score: float = Field(default=0.2, ge=-1, le=1)
    # Longest text stored per memory (a task's answer is cut to this).
    max_chars: int = Field(default=4000, ge=100)


class SessionSettings(_Section):
    """A session is a conversation: each task sees the turns before it (docs/memory.md)."""

    # Turns shown verbatim, at most; older ones are folded into the summary.
    max_turns: int = Field(default=12, ge=1, le=200)
    # Estimated tokens of verbatim history, at most, before the oldest turns are
    # summarized by ``summary_tier``.
    history_tokens: int = Field(default=2000, ge=100)
    summary_tier: ModelTier = "small"
    # Hot session state (Redis when redis.url is set, else in-process): lifetime and
    # how many sessions the in-process cache keeps.
    cache_ttl_s: float = Field(default=3600, gt=0)
    cache_max_sessions: int = Field(default=10_000, ge=1)


class WorkerSettings(_Section):
    max_concurrent_activities: int = Field(default=50, ge=1)
    metrics_port: int = Field(default=0, ge=0, le=65535)


class Settings(BaseSettings):
    """Every knob of Troupe; see config/multi-agent.yaml for what each one means."""

    model_config = SettingsConfigDict(
        env_prefix="TROUPE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path(".troupe")
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    tracing: TracingSettings = TracingSettings()
    database: DatabaseSettings = DatabaseSettings()
    temporal: TemporalSettings = TemporalSettings()
    redis: RedisSettings = RedisSettings()
    events: EventSettings = EventSettings()
    tasks: TaskSettings = TaskSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    policy: PolicySettings = PolicySettings()
    sandbox: SandboxSettings = SandboxSettings()
    tools: ToolSettings = ToolSettings()
    budgets: BudgetSettings = BudgetSettings()
    llm: LLMSettings = LLMSettings()
    orchestrator: OrchestratorSettings = OrchestratorSettings()
    memory: MemorySettings = MemorySettings()
    sessions: SessionSettings = SessionSettings()
    worker: WorkerSettings = WorkerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @model_validator(mode="after")
    def _redis_ledger_has_redis(self) -> Settings:
        if self.budgets.ledger == "redis" and self.redis.url is None:
            raise ValueError("budgets.ledger redis needs redis.url")
        return self

    @property
    def database_url(self) -> str:
        """The configured database, or the embedded SQLite file in the data dir."""
        if self.database.url is not None:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'troupe.db').resolve()}"

    @property
    def embedded(self) -> bool:
        """True when Troupe starts its own Temporal dev server."""
        return self.temporal.address is None


# The YAML file's content while load_settings builds a Settings (sources are classes).
_yaml_content: ContextVar[dict[str, Any] | None] = ContextVar("troupe_yaml", default=None)


class _YamlFileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_yaml_content.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_content.get() or {})


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), layer env and ``overrides`` on top; raise ConfigError."""
    file = path if path is not None else DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    if file.exists():
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of sections")
        data = loaded or {}
    elif path is not None:
        raise ConfigError(f"config file {file} does not exist")
    token = _yaml_content.set(data)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from exc
    finally:
        _yaml_content.reset(token)


def _describe(exc: ValidationError, file: Path) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        env = "TROUPE_" + "__".join(str(p).upper() for p in error["loc"])
        problems.append(f"  {key}: {error['msg']} (got {error.get('input')!r}; env {env})")
    return f"invalid configuration ({file}):\n" + "\n".join(problems)
