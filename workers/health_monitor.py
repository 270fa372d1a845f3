"""The health monitor: every `HEALTH_CHECK_INTERVAL_S` it probes each enabled provider, scores its
health and publishes what changed. Every worker process runs one, but only the holder of a Redis lease
works; the others wait to take the lease over when its holder stops renewing it (dies)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys
from shared.errors import GatewayError
from shared.health import HealthStatus, probe_event, read_health
from shared.queue import now_ms
from shared.routing import PROVIDERS
from shared.secrets_file import SecretsSource
from shared.settings import Settings
from workers.provider_client import ProviderClient

log = logging.getLogger(__name__)

# KEYS: lease. ARGV: token, ttl ms. Takes a free lease or renews our own; 1 if we hold it.
HOLD_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: token. Gives the lease up, if it is still ours.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class HealthMonitor:
    def __init__(self, redis: Redis, settings: Settings, holder: str) -> None:
        self.redis = redis
        self.settings = settings
        self.holder = holder
        self.token = f"{holder}|{uuid.uuid4().hex[:8]}"
        self.secrets = SecretsSource(settings)
        self.holding = asyncio.Event()
        self._hold = redis.register_script(HOLD_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self._clients: dict[str, ProviderClient] = {}
        self._probe_failures: dict[str, int] = {}
        self._last_status: dict[str, HealthStatus] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._keep_lease(), name="monitor-lease"),
                asyncio.create_task(self._check_while_holding(), name="monitor-checks"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.holding.is_set():
            self.holding.clear()
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[keys.monitor_lease()], args=[self.token])
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def _keep_lease(self) -> None:
        ttl_ms = int(self.settings.health_monitor_lease_s * 1000)
        while True:
            try:
                held = bool(await self._hold(keys=[keys.monitor_lease()], args=[self.token, ttl_ms]))
            except (RedisError, OSError) as exc:
                log.warning("monitor lease check failed (%s)", type(exc).__name__)
                held = False  # it may lapse while we cannot renew it: assume it has
            if held and not self.holding.is_set():
                log.info("health monitor: %s took the lease", self.holder)
                self.holding.set()
            elif not held and self.holding.is_set():
                log.info("health monitor: %s lost the lease", self.holder)
                self.holding.clear()
            await asyncio.sleep(self.settings.health_monitor_lease_s / 3)

    async def _check_while_holding(self) -> None:
        while True:
            await self.holding.wait()
            started = time.monotonic()
            try:
                await self.check_once()
            except (RedisError, OSError) as exc:
                log.warning("health check cycle failed (%s)", type(exc).__name__)
            except Exception:
                log.exception("health check cycle failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(self.settings.health_check_interval_s - elapsed, 0.0))

    @property
    def providers(self) -> tuple[str, ...]:
        """The enabled providers: those with an API key (keys are reloaded live)."""
        return tuple(p for p in PROVIDERS if self.secrets.api_keys(p))

    async def check_once(self) -> None:
        """Probe every enabled provider, store the verdicts and scores, publish them."""
        providers = self.providers
        results = await asyncio.gather(*(self._probe(p) for p in providers))
        at = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for provider, (latency, error) in zip(providers, results, strict=True):
                fails = 0 if error is None else self._probe_failures.get(provider, 0) + 1
                self._probe_failures[provider] = fails
                pipe.hset(
                    keys.health_probe(provider),
                    mapping={
                        "ok": 1 if error is None else 0,
                        "lat": round(latency, 1) if latency is not None else "",
                        "at": at,
                        "error": error or "",
                        "fails": fails,
                        "holder": self.holder,
                    },
                )
            await pipe.execute()
        healths = await read_health(self.redis, providers, self.settings, now_ms())
        async with self.redis.pipeline(transaction=False) as pipe:
            for provider, health in healths.items():
                pipe.hset(keys.health_probe(provider), mapping={"status": health.status.value, "score": health.score})
                pipe.publish(keys.health_events(), probe_event(provider, health.probe is None or health.probe.ok))
            pipe.hincrby(keys.monitor_runs(), self.holder, 1)
            await pipe.execute()
        for provider, health in healths.items():
            before = self._last_status.get(provider)
            if before is not None and before is not health.status:
                level = logging.INFO if health.status is HealthStatus.HEALTHY else logging.WARNING
                log.log(level, "provider %s is now %s (%s)", provider, health.status.value, "; ".join(health.reasons))
            self._last_status[provider] = health.status

    async def _probe(self, provider: str) -> tuple[float | None, str | None]:
        """(latency ms, None) if the provider answered the models listing; (None, error type) if not."""
        client = self._clients.get(provider)
        if client is None:
            client = self._clients[provider] = ProviderClient(provider, self.settings)
        try:
            return await client.probe(timeout=self.settings.health_probe_timeout_s), None
        except GatewayError as err:
            return None, err.type.value
        except Exception as exc:  # a probe must never take the monitor down
            return None, type(exc).__name__
