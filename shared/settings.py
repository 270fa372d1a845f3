"""Every setting comes from the environment through this one class (names as in SPEC.md)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderName = Literal["openai", "anthropic"]

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
    openai_api_key: SecretStr | None = None
    openai_organization: str | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_default_model: str = "gpt-4"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    anthropic_default_model: str = "claude-3-sonnet-20240229"
    anthropic_default_max_tokens: int = Field(1024, gt=0)

    # Gateway behaviour (SPEC.md names)
    primary_llm_provider: ProviderName = "openai"
    enable_llm_failover: bool = True
    enable_llm_caching: bool = True
    cache_ttl_s: int = Field(3600, gt=0, description="how long a cached answer is served")
    cache_nonzero_temperature: bool = Field(
        False, description="also cache requests whose temperature is above 0 (or unset: providers default to 1)"
    )
    failover_model_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODEL_MAP))
    price_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict, description='JSON: {"model": {"input": per_1k, "output": per_1k}}'
    )

    # Infrastructure
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "llm"

    # Request handling
    request_timeout_s: float = Field(60.0, gt=0, description="default wait of a synchronous request")
    max_request_timeout_s: float = Field(600.0, gt=0)
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    max_tokens_limit: int = Field(200_000, gt=0)
    result_ttl_s: int = Field(24 * 3600, gt=0)

    # Provider calls
    provider_connect_timeout_s: float = Field(5.0, gt=0)
    provider_read_timeout_s: float = Field(120.0, gt=0)
    provider_max_connections: int = Field(200, gt=0)
    provider_http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    retry_max_attempts: int = Field(3, ge=1, description="calls per provider before failover")
    retry_base_delay_s: float = Field(0.25, ge=0)
    retry_max_delay_s: float = Field(8.0, ge=0)

    # Rate limits (SPEC.md's defaults): token buckets shared by every process through Redis. A full
    # bucket holds RATE_LIMIT_BURST_S seconds of refill; 60 is a minute's allowance, as providers count.
    rate_limit_global_rpm: int = Field(120, gt=0)
    rate_limit_global_tpm: int = Field(200_000, gt=0)
    rate_limit_openai_rpm: int = Field(60, gt=0)
    rate_limit_openai_tpm: int = Field(100_000, gt=0)
    rate_limit_anthropic_rpm: int = Field(60, gt=0)
    rate_limit_anthropic_tpm: int = Field(100_000, gt=0)
    rate_limit_burst_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    rate_limit_default_completion_tokens: int = Field(
        1024, gt=0, description="completion tokens reserved for an OpenAI call without maxTokens"
    )
    # Per-tenant quotas (the JWT subject): defaults, and overrides as JSON {"alice": {"rpm": 10, "tpm": 5000}}
    tenant_default_rpm: int = Field(120, gt=0)
    tenant_default_tpm: int = Field(200_000, gt=0)
    tenant_quotas: dict[str, TenantQuota] = Field(default_factory=dict)
    tenant_burst_s: float = Field(60.0, gt=0, allow_inf_nan=False)

    # Authentication (JWT bearer on every route)
    auth_enabled: bool = True
    jwt_secret: SecretStr | None = None
    jwt_previous_secret: SecretStr | None = None
    jwt_public_key_file: str | None = None
    jwt_previous_public_key_file: str | None = None
    jwt_jwks_file: str | None = None
    jwt_private_key_file: str | None = None
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = Field(30.0, ge=0)
    jwt_role_claim: str = "role"
    jwt_verified_cache_size: int = Field(4096, ge=0, description="verified tokens remembered until they expire")

    # Provider key rotation: OPENAI_API_KEY (and ANTHROPIC_API_KEY) may be comma-separated lists;
    # the *_KEYS variables add more keys after them. Keys are tried in order.
    openai_api_keys: SecretStr | None = None
    anthropic_api_keys: SecretStr | None = None
    provider_key_cooldown_s: float = Field(300.0, ge=0, description="a key refused by the provider is set aside")
    provider_keys_file: str | None = Field(None, description="dotenv file of keys and JWT secrets, reloaded live")
    provider_keys_poll_s: float = Field(2.0, gt=0, description="how often that file's mtime is checked")

    # Workers
    worker_max_jobs: int = Field(200, gt=0)
    worker_lease_s: float = Field(6.0, gt=0, description="a dead worker's job is retaken after this")
    worker_poll_fallback_s: float = Field(1.0, gt=0)

    # Batches
    batch_max_requests: int = Field(50_000, gt=0)
    batch_max_body_bytes: int = Field(200 * 1024 * 1024, gt=0, description="largest batch upload")
    batch_default_window_s: float = Field(24 * 3600.0, gt=0, description="completion window when none is given")
    batch_max_window_s: float = Field(7 * 24 * 3600.0, gt=0)
    batch_slot_share: float = Field(
        0.75, gt=0, le=4, description="batch jobs queued or running per provider, as a share of its workers' slots"
    )
    batch_feed_chunk: int = Field(500, gt=0, le=1000, description="most batch items one feed moves")

    # Circuit breaker, one per provider, shared by every process through Redis
    breaker_enabled: bool = True
    breaker_failure_threshold: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    breaker_error_rate: float = Field(0.5, gt=0, le=1, description="failure share over the window that opens it")
    breaker_window_s: float = Field(60.0, gt=0)
    breaker_min_requests: int = Field(20, ge=1, description="the error rate decides nothing below this many calls")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="open this long before probe requests are let through")
    breaker_half_open_probes: int = Field(1, ge=1, description="probe requests let through, across all workers")
    breaker_probe_timeout_s: float | None = Field(
        None, gt=0, description="a probe with no verdict after this reopens the breaker (default: connect+read)"
    )

    # Health monitor (one per deployment, elected by a Redis lease) and routing by health
    health_monitor_enabled: bool = True
    health_check_interval_s: float = Field(30.0, gt=0)
    health_probe_timeout_s: float = Field(5.0, gt=0)
    health_window_s: float = Field(60.0, gt=0, description="passive figures cover this much recent traffic")
    health_min_requests: int = Field(5, ge=1, description="error rates decide nothing below this many calls")
    health_unhealthy_error_rate: float = Field(0.5, gt=0, le=1)
    health_monitor_lease_s: float = Field(15.0, gt=0, description="a dead monitor is replaced after this")
    provider_view_refresh_s: float = Field(5.0, gt=0, description="the routing view re-reads Redis this often")

    # Observability: metrics, privacy-masked request logs, alerts
    observability_enabled: bool = Field(True, description="metrics, request logs and alerts on or off (bench switch)")
    metrics_public: bool = Field(True, description="serve Prometheus' /metrics without authentication")
    log_content_max_chars: int = Field(2000, gt=0, description="logged prompt/completion text is cut to this")
    log_retention_days: float = Field(30.0, gt=0)
    alert_error_rate: float = Field(0.10, ge=0, le=1, description="a provider above this error rate is degraded")
    alert_latency_ms: float = Field(5000.0, gt=0, description="average latency above this raises a performance alert")
    alert_cost_per_hour_usd: float = Field(100.0, ge=0, description="spend over the last hour above this alerts")
    alert_window_s: int = Field(300, ge=60, description="error rate and latency are judged over this window")
    alert_min_requests: int = Field(10, ge=1, description="fewer requests in the window decide nothing")
    alert_eval_interval_s: float = Field(1.0, gt=0, description="at most one alert evaluation per process per this")
    alert_webhook_url: str | None = None
    alert_webhook_timeout_s: float = Field(3.0, gt=0)

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
