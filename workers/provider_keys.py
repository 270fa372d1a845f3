"""A provider's API keys: tried in order, a refused key set aside for every worker, reloaded live.

- The keys are `<PROVIDER>_API_KEY` (a comma-separated list) then `<PROVIDER>_API_KEYS`, from the
  environment or, overriding it, from PROVIDER_KEYS_FILE (re-read on change and on SIGHUP).
- A key the provider refuses with `authentication_error` is set aside for PROVIDER_KEY_COOLDOWN_S in a
  Redis sorted set that every worker reads, and the call is sent again at once with the next key: a
  revoked key costs neither a retry of the request's budget nor a failed request.
- Keys are named by a short hash (`key_id`) in Redis and in logs, never by their value.
- When every key is set aside they are tried all the same: a likely refusal beats no call at all.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from plumbing.redis_connection import connect
from shared import keys
from shared.errors import ErrorType, GatewayError
from shared.secrets_file import SecretsSource
from shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
COOLDOWN_REFRESH_S = 1.0  # how stale this process's view of the shared set-aside list may be


def key_id(key: str) -> str:
    """How a key is named anywhere it could be seen: 12 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class ProviderKeys:
    def __init__(
        self,
        provider: str,
        secrets: SecretsSource,
        *,
        redis: Redis | None = None,
        cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.secrets = secrets
        self.redis = redis
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._keys: list[str] = []
        self._version = -1
        self._set_aside: dict[str, float] = {}  # key id -> until (epoch s), shared through Redis
        self._refreshed = float("-inf")
        self.current()

    @classmethod
    def from_settings(cls, provider: str, settings: Settings) -> ProviderKeys:
        return cls(
            provider,
            SecretsSource(settings),
            redis=connect(settings.redis_address(), max_connections=4),
            cooldown_s=settings.provider_key_cooldown_s,
        )

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    def current(self) -> list[str]:
        """The keys in the order they are tried (cheap: re-derived only after a reload)."""
        self.secrets.values()
        if self.secrets.version != self._version:
            self._version = self.secrets.version
            found = self.secrets.api_keys(self.provider)
            if found != self._keys:
                self._keys = found
                ids = ", ".join(key_id(k) for k in found) or "none"
                log.info("%s API keys loaded: %d (ids %s)", self.provider, len(found), ids)
        return self._keys

    def first(self) -> str | None:
        found = self.current()
        return found[0] if found else None

    async def run(self, call: Callable[[str | None], Awaitable[T]]) -> T:
        """`call(key)` with the first usable key; on authentication_error, again with the next one."""
        tried: list[str] = []
        while True:
            key = await self.pick(tried)
            try:
                return await call(key)
            except GatewayError as err:
                if err.type is not ErrorType.AUTHENTICATION or key is None:
                    raise
                await self.set_aside(key)
                tried.append(key)
                if not [k for k in self.current() if k not in tried]:
                    raise

    async def pick(self, tried: Collection[str] = ()) -> str | None:
        found = self.current()
        untried = [k for k in found if k not in tried] if tried else found
        if len(untried) <= 1:
            return untried[0] if untried else None
        await self._refresh()
        now = self.clock()
        for key in untried:
            if self._set_aside.get(key_id(key), 0.0) <= now:
                return key
        return untried[0]

    def is_set_aside(self, key: str) -> bool:
        return self._set_aside.get(key_id(key), 0.0) > self.clock()

    async def set_aside(self, key: str) -> None:
        """Tell every worker to skip this key for the cooldown."""
        if self.cooldown_s <= 0:
            return
        kid = key_id(key)
        now = self.clock()
        until = now + self.cooldown_s
        if self._set_aside.get(kid, 0.0) <= now:
            log.warning(
                "%s API key %s refused (authentication_error): set aside for %gs",
                self.provider,
                kid,
                self.cooldown_s,
            )
        self._set_aside[kid] = until
        if self.redis is None:
            return
        name = keys.provider_key_cooldowns(self.provider)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(name, {kid: int(until * 1000)})
                pipe.zremrangebyscore(name, "-inf", int(now * 1000))
                pipe.pexpire(name, int(self.cooldown_s * 1000) + 1000)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not share a set-aside %s key (%s)", self.provider, type(exc).__name__)

    async def _refresh(self) -> None:
        """Merge in the keys other workers set aside, at most once per COOLDOWN_REFRESH_S."""
        mono = time.monotonic()
        if self.redis is None or mono - self._refreshed < COOLDOWN_REFRESH_S:
            return
        self._refreshed = mono
        now = self.clock()
        try:
            rows = await self.redis.zrangebyscore(
                keys.provider_key_cooldowns(self.provider), int(now * 1000), "+inf", withscores=True
            )
        except (RedisError, OSError) as exc:
            log.warning("could not read set-aside %s keys (%s)", self.provider, type(exc).__name__)
            return
        merged = {kid: until for kid, until in self._set_aside.items() if until > now}
        for member, score in rows:
            kid = member.decode() if isinstance(member, bytes) else str(member)
            merged[kid] = max(merged.get(kid, 0.0), float(score) / 1000)
        self._set_aside = merged
