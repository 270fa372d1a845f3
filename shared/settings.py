"""Every setting comes from the environment through this one class (names as in SPEC.md)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from plumbing.redis_connection import RedisAddress, parse_hosts

ProviderName = Literal["openai", "anthropic"]
# what an acknowledgement (a 202, a batch's acceptance, an enqueue) promises of a Redis crash: README
DurabilityMode = Literal["everysec", "always", "replica"]
# the jobs a worker takes: every kind, sync and async jobs only, or batch items only
JobKinds = Literal["all", "interactive", "batch"]

DEFAULT_MODEL_MAP = {
    "gpt-4": "claude-3-opus-20240229",
    "gpt-4-turbo": "claude-3-sonnet-20240229",
    "gpt-3.5-turbo": "claude-3-haiku-20240307",
    "claude-3-opus-20240229": "gpt-4",
    "claude-3-opus": "gpt-4",
    "claude-3-sonnet-20240229": "gpt-4-turbo",
    "claude-3-sonnet": "gpt-4-turbo",
    "claude-3-haiku-20240307": "gpt-3.5-turbo",
    "claude-3-haiku": "gpt-3.5-turbo",
}


class TenantQuota(BaseModel):
    """One tenant's override of TENANT_DEFAULT_RPM / TENANT_DEFAULT_TPM (an omitted field keeps the default)."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Providers (SPEC.md names)
    openai_api_key: SecretStr | None = Field(
        None, description="OpenAI key (a comma-separated list rotates: tried in order)"
    )
    openai_organization: str | None = Field(None, description="sent as OpenAI-Organization when set")
    openai_base_url: str = Field("https://api.openai.com/v1", description="OpenAI API base URL")
    openai_default_model: str = Field("gpt-4", description="model asked of OpenAI when a request names none")
    anthropic_api_key: SecretStr | None = Field(
        None, description="Anthropic key (a comma-separated list rotates: tried in order)"
    )
    anthropic_base_url: str = Field("https://api.anthropic.com", description="Anthropic API base URL")
    anthropic_version: str = Field("2023-06-01", description="sent as anthropic-version")
    anthropic_default_model: str = Field(
        "claude-3-sonnet-20240229", description="model asked of Anthropic when a request names none"
    )
    anthropic_default_max_tokens: int = Field(
        1024, gt=0, description="max_tokens sent to Anthropic when a request gives none (it is required there)"
    )

    # Gateway behaviour (SPEC.md names)
    primary_llm_provider: ProviderName = Field(
        "openai", description="provider for requests that name neither a provider nor a model family"
    )
    enable_llm_failover: bool = Field(True, description="re-enqueue retryably failed requests on the other provider")
    enable_llm_caching: bool = Field(True, description="serve identical deterministic requests from the response cache")
    cache_ttl_s: int = Field(3600, gt=0, description="how long a cached answer is served")
    cache_nonzero_temperature: bool = Field(
        False, description="also cache requests whose temperature is above 0 (or unset: providers default to 1)"
    )
    failover_model_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_MAP),
        description="JSON: the model asked of the other provider on failover",
    )
    price_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict, description='JSON: {"model": {"input": per_1k, "output": per_1k}}'
    )

    # Infrastructure
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="the one Redis every process shares (rediss:// for TLS); with REDIS_SENTINELS only its"
        " scheme, credentials and database are used",
    )
    redis_ca_file: str | None = Field(None, description="PEM authority a rediss:// server's certificate must chain to")
    redis_sentinels: str = Field(
        "", description="host:port,host:port of Redis Sentinels: the primary is the one they name (failover followed)"
    )
    redis_sentinel_master: str = Field("mymaster", description="the name the Sentinels monitor the primary under")
    redis_durability: DurabilityMode = Field(
        "everysec",
        description="what an acknowledged request survives: everysec (AOF fsync each second), always (fsync per"
        " write), replica (acknowledged once one replica has it: WAIT)",
    )
    redis_durability_apply: bool = Field(
        False, description="at start-up, CONFIG SET Redis's AOF to the mode when it is weaker (else only reported)"
    )
    redis_replica_wait_ms: int = Field(
        500, gt=0, le=4000, description="replica mode: an acknowledgement no replica confirmed within this gets 503"
    )

    # Request handling
    request_timeout_s: float = Field(60.0, gt=0, description="default wait of a synchronous request")
    max_request_timeout_s: float = Field(600.0, gt=0, description="longest wait a request may ask for")
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="larger request bodies get 413")
    result_ttl_s: int = Field(24 * 3600, gt=0, description="how long a request's result stays fetchable")

    # Streaming (`"stream": true`)
    stream_max_events: int = Field(
        20_000, gt=0, description="deltas a stream keeps in Redis for resuming (older ones are trimmed)"
    )
    stream_keep_s: int = Field(
        600, gt=0, description="how long a finished stream's deltas stay in Redis for resuming (then: the whole answer)"
    )
    stream_abandon_grace_s: float = Field(
        2.0,
        ge=0,
        description="a synchronous stream whose client went away is stopped upstream if no client resumed it"
        " within this",
    )

    # The API's HTTP server (api/serve.py): what one connection may hold, in bytes and in time
    api_max_header_bytes: int = Field(
        32 * 1024, gt=0, description="a request's line and headers above this many bytes get 431 at once"
    )
    api_header_timeout_s: float = Field(
        10.0, gt=0, description="a request's line and headers not in within this get 408 (slowloris)"
    )
    api_keep_alive_s: int = Field(20, gt=0, description="an idle kept-alive connection is closed after this")
    api_max_in_flight: int | None = Field(
        128,
        gt=0,
        description="work requests (completions, job and batch submissions) one API process holds at once;"
        " one more gets 503 with Retry-After at once (api/shedding.py; None: no bound)",
    )
    api_max_loop_lag_ms: float | None = Field(
        None,
        gt=0,
        description="while an API process's event loop runs this late (twice in a row), new work requests get"
        " 503 with Retry-After at once (api/shedding.py; None: off, as on a host shared with other loads)",
    )
    api_limit_concurrency: int | None = Field(
        None, gt=0, description="connections plus requests per process above this get 503 (default: no cap)"
    )

    # Provider calls
    provider_connect_timeout_s: float = Field(5.0, gt=0, description="connect (and pool) timeout of provider calls")
    provider_read_timeout_s: float = Field(
        120.0, gt=0, description="read timeout of provider calls: bounds how long a hung provider holds a request"
    )
    provider_first_byte_timeout_s: float = Field(
        30.0, gt=0, description="a streamed provider call's first token not in within this (from sending) fails it"
    )
    provider_stream_idle_timeout_s: float = Field(
        30.0, gt=0, description="a streamed provider call sending nothing for this long after its first token fails"
    )
    provider_max_connections: int = Field(200, gt=0, description="pooled connections per provider per worker process")
    provider_http_transport: Literal["http1", "aiohttp", "httpx"] = Field(
        "http1",
        description="the httpx client's transport: http1 (HTTP/1.1 on asyncio and httptools, fastest), aiohttp,"
        " or httpx's own (always httpx's own through a proxy named by HTTPS_PROXY, HTTP_PROXY or ALL_PROXY)",
    )
    retry_max_attempts: int = Field(3, ge=1, description="calls per provider before failover")
    retry_base_delay_s: float = Field(0.25, ge=0, description="backoff base (full jitter)")
    retry_max_delay_s: float = Field(
        8.0, ge=0, description="backoff cap; a longer retry-after fails over instead of waiting"
    )

    # Rate limits (SPEC.md's defaults): token buckets shared by every process through Redis. A full
    # bucket holds RATE_LIMIT_BURST_S seconds of refill; 60 is a minute's allowance, as providers count.
    rate_limit_global_rpm: int = Field(120, gt=0, description="requests/min across all providers (SPEC: 120)")
    rate_limit_global_tpm: int = Field(200_000, gt=0, description="tokens/min across all providers (SPEC: 200K)")
    rate_limit_openai_rpm: int = Field(60, gt=0, description="requests/min to OpenAI (SPEC: 60)")
    rate_limit_openai_tpm: int = Field(100_000, gt=0, description="tokens/min to OpenAI (SPEC: 100K)")
    rate_limit_anthropic_rpm: int = Field(60, gt=0, description="requests/min to Anthropic (SPEC: 60)")
    rate_limit_anthropic_tpm: int = Field(100_000, gt=0, description="tokens/min to Anthropic (SPEC: 100K)")
    rate_limit_burst_s: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="bucket capacity, in seconds of refill"
    )
    rate_limit_default_completion_tokens: int = Field(
        1024, gt=0, description="completion tokens reserved for an OpenAI call without maxTokens"
    )
    # Per-tenant quotas (the JWT subject): defaults, and overrides as JSON {"alice": {"rpm": 10, "tpm": 5000}}
    tenant_default_rpm: int = Field(120, gt=0, description="requests/min per JWT subject")
    tenant_default_tpm: int = Field(200_000, gt=0, description="tokens/min per JWT subject")
    tenant_quotas: dict[str, TenantQuota] = Field(
        default_factory=dict, description='JSON overrides per subject: {"alice": {"rpm": 10, "tpm": 5000}}'
    )
    tenant_burst_s: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="tenant bucket capacity, in seconds of refill"
    )

    # Authentication (JWT bearer on every route)
    auth_enabled: bool = Field(True, description="false: every caller is an anonymous admin (development only)")
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret, at least 32 bytes (RFC 7518)")
    jwt_previous_secret: SecretStr | None = Field(None, description="also accepted while a rotation is under way")
    jwt_public_key_file: str | None = Field(None, description="PEM public key for RS256/ES256")
    jwt_previous_public_key_file: str | None = Field(None, description="previous PEM key, accepted during a rotation")
    jwt_jwks_file: str | None = Field(None, description="JWKS file; keys chosen by kid")
    jwt_private_key_file: str | None = Field(
        None, description="PEM private key the token command signs RS256/ES256 tokens with"
    )
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = Field("HS256", description="the one algorithm accepted")
    jwt_audience: str | None = Field(None, description="required aud when set")
    jwt_issuer: str | None = Field(None, description="required iss when set")
    jwt_leeway_s: float = Field(30.0, ge=0, description="clock leeway for exp/nbf/iat")
    jwt_role_claim: str = Field("role", description="claim holding admin or user")
    jwt_verified_cache_size: int = Field(4096, ge=0, description="verified tokens remembered until they expire")
    jwt_allow_anonymous: bool = Field(
        False, description="accept tokens without sub, all as the one tenant anonymous (else 401)"
    )

    # Provider key rotation: OPENAI_API_KEY (and ANTHROPIC_API_KEY) may be comma-separated lists;
    # the *_KEYS variables add more keys after them. Keys are tried in order.
    openai_api_keys: SecretStr | None = Field(
        None, description="more OpenAI keys, comma-separated, tried after OPENAI_API_KEY"
    )
    anthropic_api_keys: SecretStr | None = Field(
        None, description="more Anthropic keys, comma-separated, tried after ANTHROPIC_API_KEY"
    )
    provider_key_cooldown_s: float = Field(300.0, ge=0, description="a key refused by the provider is set aside")
    provider_keys_file: str | None = Field(None, description="dotenv file of keys and JWT secrets, reloaded live")
    provider_keys_poll_s: float = Field(2.0, gt=0, description="how often that file's mtime is checked")

    # Workers
    worker_max_jobs: int = Field(200, gt=0, description="concurrent jobs per worker process")
    queue_max_waiting: int = Field(
        5000,
        ge=0,
        description="new requests get 503 with Retry-After while a provider's queue holds this many"
        " synchronous and async jobs no worker has claimed yet (0: no bound)",
    )
    worker_lease_s: float = Field(6.0, gt=0, description="a dead worker's job is retaken after this")
    worker_handover_take_s: float = Field(
        0.5,
        gt=0,
        le=5,
        description="a job handed to a worker that has not taken it after this goes back to the queue (stalled worker)",
    )
    worker_stop_grace_s: float = Field(
        8.0,
        ge=0,
        description="on SIGTERM/SIGINT running jobs may end within this; the rest go back to the queue",
    )
    worker_poll_fallback_s: float = Field(
        1.0, gt=0, description="queue poll when no wake-up arrives (wake-ups make pickup immediate)"
    )
    worker_job_kinds: JobKinds = Field(
        "all",
        description="jobs a worker takes: all; interactive (sync, async); batch (batch items, at a lower CPU priority)",
    )
    worker_batch_nice: int = Field(10, ge=0, le=19, description="CPU niceness a batch-only worker takes on")

    # Batches
    batch_max_requests: int = Field(50_000, gt=0, description="requests per batch")
    batch_max_body_bytes: int = Field(200 * 1024 * 1024, gt=0, description="largest batch upload")
    batch_default_window_s: float = Field(24 * 3600.0, gt=0, description="completion window when none is given")
    batch_max_window_s: float = Field(7 * 24 * 3600.0, gt=0, description="longest completion window")
    batch_slot_share: float = Field(
        0.75, gt=0, le=4, description="batch jobs queued or running per provider, as a share of its workers' slots"
    )
    batch_feed_chunk: int = Field(500, gt=0, le=1000, description="most batch items one feed moves")

    # Circuit breaker, one per provider, shared by every process through Redis
    breaker_enabled: bool = Field(True, description="circuit breakers on or off")
    breaker_failure_threshold: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    breaker_error_rate: float = Field(0.5, gt=0, le=1, description="failure share over the window that opens it")
    breaker_window_s: float = Field(60.0, gt=0, description="rolling window of the error rate")
    breaker_min_requests: int = Field(20, ge=1, description="the error rate decides nothing below this many calls")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="open this long before probe requests are let through")
    breaker_half_open_probes: int = Field(1, ge=1, description="probe requests let through, across all workers")
    breaker_probe_timeout_s: float | None = Field(
        None, gt=0, description="a probe with no verdict after this reopens the breaker (default: connect+read)"
    )

    # Health monitor (one per deployment, elected by a Redis lease) and routing by health
    health_monitor_enabled: bool = Field(True, description="run the (single, leased) health monitor in workers")
    health_check_interval_s: float = Field(30.0, gt=0, description="health probe period")
    health_probe_timeout_s: float = Field(5.0, gt=0, description="timeout of one health probe")
    health_window_s: float = Field(60.0, gt=0, description="passive figures cover this much recent traffic")
    health_min_requests: int = Field(5, ge=1, description="error rates decide nothing below this many calls")
    health_unhealthy_error_rate: float = Field(
        0.5, gt=0, le=1, description="error rate at which a provider is unhealthy"
    )
    health_monitor_lease_s: float = Field(15.0, gt=0, description="a dead monitor is replaced after this")
    provider_view_refresh_s: float = Field(5.0, gt=0, description="the routing view re-reads Redis this often")

    # Observability: metrics, privacy-masked request logs, alerts
    observability_enabled: bool = Field(True, description="metrics, request logs and alerts on or off (bench switch)")
    metrics_public: bool = Field(True, description="serve Prometheus' /metrics without authentication")
    metrics_max_models: int = Field(
        100, ge=0, description="model names outside the known catalogue given metric labels per provider; then `other`"
    )
    log_content_max_chars: int = Field(2000, gt=0, description="logged prompt/completion text is cut to this")
    log_retention_days: float = Field(30.0, gt=0, description="stored request logs are trimmed after this")
    # Where the logs live (docs/log_store.md): PostgreSQL when set, fed from the Redis stream (then only a
    # buffer); unset, the stream is the store. Either way the stream is capped by entries and bytes.
    log_store_url: SecretStr | None = Field(None, description="postgresql://... : the logs' store (unset: Redis)")
    log_redis_max_entries: int = Field(500_000, gt=0, description="most log entries kept in Redis (approximate)")
    log_redis_max_bytes: int = Field(256 * 2**20, gt=0, description="most bytes of log entries kept in Redis")
    log_writer_interval_s: float = Field(1.0, gt=0, description="the log store's writer drains Redis this often")
    log_writer_batch: int = Field(2000, gt=0, le=50_000, description="most entries one store write carries")
    alert_error_rate: float = Field(0.10, ge=0, le=1, description="a provider above this error rate is degraded")
    alert_latency_ms: float = Field(5000.0, gt=0, description="average latency above this raises a performance alert")
    alert_cost_per_hour_usd: float = Field(100.0, ge=0, description="spend over the last hour above this alerts")
    alert_window_s: int = Field(300, ge=60, description="error rate and latency are judged over this window")
    alert_min_requests: int = Field(10, ge=1, description="fewer requests in the window decide nothing")
    alert_eval_interval_s: float = Field(1.0, gt=0, description="at most one alert evaluation per process per this")
    alert_webhook_url: str | None = Field(None, description="alerts are also POSTed here when set")
    alert_webhook_timeout_s: float = Field(3.0, gt=0, description="webhook POST timeout")

    @field_validator("log_store_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return None if v == "" else v  # compose passes `LOG_STORE_URL: ${LOG_STORE_URL:-}`

    @field_validator("redis_sentinels")
    @classmethod
    def _host_list(cls, v: str) -> str:
        parse_hosts(v)  # a clear error at start-up rather than at the first connection
        return v

    @field_validator("redis_ca_file", mode="before")
    @classmethod
    def _blank_ca_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    def redis_address(self) -> RedisAddress:
        """Where every process finds Redis: REDIS_URL, or the primary REDIS_SENTINELS name."""
        return RedisAddress(
            self.redis_url, parse_hosts(self.redis_sentinels), self.redis_sentinel_master, self.redis_ca_file
        )

    @field_validator("openai_base_url", "anthropic_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    def api_key(self, provider: str) -> str | None:
        """The first key of the provider (the one tried first)."""
        found = self.api_keys(provider)
        return found[0] if found else None

    def api_keys(self, provider: str) -> list[str]:
        """Every key configured for the provider, in the order they are tried."""
        pair = (
            (self.openai_api_key, self.openai_api_keys)
            if provider == "openai"
            else (self.anthropic_api_key, self.anthropic_api_keys)
        )
        return split_keys(*(s.get_secret_value() for s in pair if s))

    def configured_models(self) -> set[str]:
        """The model names the configuration routes: the default models and the failover map's."""
        m = self.failover_model_map
        return {self.openai_default_model, self.anthropic_default_model, *m, *m.values()}

    def other_provider(self, provider: str) -> str:
        return "anthropic" if provider == "openai" else "openai"


def split_keys(*lists: str | None) -> list[str]:
    """Comma-separated key lists, merged in order, blanks and repeats dropped."""
    out: list[str] = []
    for raw in lists:
        for key in (raw or "").split(","):
            key = key.strip()
            if key and key not in out:
                out.append(key)
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
