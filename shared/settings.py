"""Every setting comes from the environment through this one class (names as in SPEC.md)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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

    # Workers
    worker_max_jobs: int = Field(200, gt=0)
    worker_lease_s: float = Field(6.0, gt=0, description="a dead worker's job is retaken after this")
    worker_poll_fallback_s: float = Field(1.0, gt=0)

    @field_validator("openai_base_url", "anthropic_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    def api_key(self, provider: str) -> str | None:
        secret = self.openai_api_key if provider == "openai" else self.anthropic_api_key
        return secret.get_secret_value() if secret else None

    def other_provider(self, provider: str) -> str:
        return "anthropic" if provider == "openai" else "openai"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
