"""The health monitor: every `HEALTH_CHECK_INTERVAL_S` it probes each enabled provider, scores its
health and publishes what changed. Every worker process runs one, but only the holder of a Redis lease
works; the others wait to take the lease over when its holder stops renewing it (dies)."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from shared import keys
from shared.errors import GatewayError
from shared.health import HealthStatus, probe_event, read_health
from shared.queue import now_ms
from shared.routing import PROVIDERS
from shared.secrets_file import SecretsSource
from shared.settings import Settings
from workers.lease import Lease
from workers.provider_client import ProviderClient

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, redis: Redis, settings: Settings, holder: str) -> None:
        self.redis = redis
        self.settings = settings
        self.holder = holder
        self.lease = Lease(redis, keys.monitor_lease(), holder, settings.health_monitor_lease_s, "health monitor")
        self.holding = self.lease.holding
        self.secrets = SecretsSource(settings)
        self._clients: dict[str, ProviderClient] = {}
        self._probe_failures: dict[str, int] = {}
        self._last_status: dict[str, HealthStatus] = {}

    def start(self) -> None:
        self.lease.start(self.check_once, self.settings.health_check_interval_s, "monitor")

    async def stop(self) -> None:
        await self.lease.stop()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

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
