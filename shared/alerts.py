"""Alerts judged from the metrics buckets: a degraded provider, slow answers, spend per hour.

Any process may evaluate (each at most once per `alert_eval_interval_s`); the state lives in one Redis
hash, and an alert changes state by HSETNX (raise) or HDEL (clear), whose answer tells exactly one
process that *it* made the transition. That process logs it, appends it to the history stream and
hands it to the webhook, so an episode is announced once however many processes watch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson
import structlog
from redis.asyncio import Redis

from shared import keys, metrics
from shared.request_log import iso_ms
from shared.routing import PROVIDERS
from shared.settings import Settings

log = structlog.stdlib.get_logger(__name__)

HISTORY_KEPT: Final = 1000
COST_WINDOW_S: Final = 3600
WEBHOOK_QUEUE: Final = 100
REQUEST_LOG_CONTEXT: Final = ("correlation_id", "request_id")


@dataclass(frozen=True, slots=True)
class Thresholds:
    error_rate: float = 0.10
    latency_ms: float = 5000.0
    cost_per_hour_usd: float = 100.0
    window_s: float = 300.0
    min_requests: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            error_rate=settings.alert_error_rate,
            latency_ms=settings.alert_latency_ms,
            cost_per_hour_usd=settings.alert_cost_per_hour_usd,
            window_s=settings.alert_window_s,
            min_requests=settings.alert_min_requests,
        )


def judge(
    window: Mapping[str, int], hour: Mapping[str, int], t: Thresholds, providers: tuple[str, ...] = PROVIDERS
) -> dict[str, dict[str, Any]]:
    """The alerts whose condition holds now, by id: pure arithmetic on summed counters."""
    firing: dict[str, dict[str, Any]] = {}
    for provider in providers:
        figures = metrics.provider_figures(window, provider)
        calls = figures.requests - _hits(window, provider)
        if calls < t.min_requests:
            continue
        rate = figures.errors / calls
        if rate > t.error_rate:
            firing[f"error_rate:{provider}"] = {
                "type": "error_rate",
                "provider": provider,
                "severity": "critical",
                "value": round(rate, 4),
                "threshold": t.error_rate,
                "message": f"{provider} is degraded: {rate:.0%} of {calls} calls failed in the last "
                f"{t.window_s:g}s (threshold {t.error_rate:.0%})",
            }
        average = figures.average_latency_ms or 0.0
        if average > t.latency_ms:
            firing[f"latency:{provider}"] = {
                "type": "latency",
                "provider": provider,
                "severity": "warning",
                "value": round(average, 2),
                "threshold": t.latency_ms,
                "message": f"{provider} is slow: {average:.0f} ms on average over the last {t.window_s:g}s "
                f"(threshold {t.latency_ms:g} ms)",
            }
    spent = hour.get("g|cost", 0) / metrics.COST_UNIT
    if spent > t.cost_per_hour_usd:
        firing["cost:gateway"] = {
            "type": "cost",
            "provider": None,
            "severity": "warning",
            "value": round(spent, 4),
            "threshold": t.cost_per_hour_usd,
            "message": f"${spent:.2f} spent in the last hour (threshold ${t.cost_per_hour_usd:g})",
        }
    return firing


def _hits(counters: Mapping[str, int], provider: str) -> int:
    suffix = "|hit"
    prefix = f"n|{provider}|"
    return sum(v for f, v in counters.items() if f.startswith(prefix) and f.endswith(suffix))


class WebhookSender:
    """Fire-and-forget POSTs from a bounded queue: a slow or dead webhook costs requests nothing."""

    def __init__(self, url: str, timeout_s: float, queue_size: int = WEBHOOK_QUEUE) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def send(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("alert webhook queue full; event dropped", alert=event.get("id"))
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-webhook")

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while not self.queue.empty():
                event = self.queue.get_nowait()
                try:
                    resp = await client.post(self.url, content=orjson.dumps(event), headers=_JSON)
                    if resp.status_code >= 300:
                        log.warning("alert webhook answered an error", status=resp.status_code, alert=event.get("id"))
                except httpx.HTTPError as exc:
                    log.warning("alert webhook unreachable", error=type(exc).__name__, alert=event.get("id"))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


_JSON: Final = {"Content-Type": "application/json"}


class AlertEngine:
    def __init__(
        self,
        redis: Redis,
        thresholds: Thresholds,
        *,
        interval_s: float = 1.0,
        webhook: WebhookSender | None = None,
    ) -> None:
        self.redis = redis
        self.thresholds = thresholds
        self.interval_s = interval_s
        self.webhook = webhook
        self._next_at = 0.0
        self._running: asyncio.Task[list[dict[str, Any]]] | None = None

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> AlertEngine:
        webhook = (
            WebhookSender(settings.alert_webhook_url, settings.alert_webhook_timeout_s)
            if settings.alert_webhook_url
            else None
        )
        return cls(
            redis, Thresholds.from_settings(settings), interval_s=settings.alert_eval_interval_s, webhook=webhook
        )

    def due(self) -> bool:
        return time.monotonic() >= self._next_at

    def evaluate_soon(self) -> None:
        """Evaluate in the background if this process has not in the last interval (never blocks)."""
        if not self.due() or (self._running is not None and not self._running.done()):
            return
        self._next_at = time.monotonic() + self.interval_s
        self._running = asyncio.get_running_loop().create_task(self._evaluate_logged(), name="alert-evaluation")

    async def _evaluate_logged(self) -> list[dict[str, Any]]:
        # the task inherited the context of the request that happened to trigger it: not its story
        structlog.contextvars.unbind_contextvars(*REQUEST_LOG_CONTEXT)
        try:
            return await self.evaluate()
        except Exception as exc:  # alerts must never take a worker down
            log.warning("alert evaluation failed", error=type(exc).__name__)
            return []

    async def evaluate(self, now_s: float | None = None) -> list[dict[str, Any]]:
        """Judge the conditions now and make the transitions; returns the events this process made."""
        now = time.time() if now_s is None else now_s
        self._next_at = time.monotonic() + self.interval_s
        window_keys = metrics.window_keys(self.thresholds.window_s, now)
        hour_keys = metrics.window_keys(COST_WINDOW_S, now)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in window_keys:
                pipe.hgetall(name)
            for name in hour_keys:
                pipe.hget(name, "g|cost")
            pipe.hgetall(keys.alerts_active())
            replies = await pipe.execute()
        window = _sum_hashes(replies[: len(window_keys)])
        hour = {"g|cost": sum(int(v) for v in replies[len(window_keys) : -1] if v)}
        active = {k.decode(): v for k, v in replies[-1].items()}
        firing = judge(window, hour, self.thresholds)
        raise_ids = [i for i in firing if i not in active]
        clear_ids = [i for i in active if i not in firing]
        if not raise_ids and not clear_ids:
            return []
        stamp = iso_ms(int(now * 1000))
        raised = {i: {"id": i, **firing[i], "raisedAt": stamp} for i in raise_ids}
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in raise_ids:
                pipe.hsetnx(keys.alerts_active(), i, orjson.dumps(raised[i]).decode())
            for i in clear_ids:
                pipe.hdel(keys.alerts_active(), i)
            won = await pipe.execute()
        events = [{**raised[i], "event": "raised", "at": stamp} for i, ok in zip(raise_ids, won, strict=False) if ok]
        events += [
            {**orjson.loads(active[i]), "event": "cleared", "at": stamp}
            for i, ok in zip(clear_ids, won[len(raise_ids) :], strict=True)
            if ok
        ]
        if events:
            await self._announce(events)
        return events

    async def _announce(self, events: list[dict[str, Any]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(keys.alerts_history(), {"d": orjson.dumps(event)}, maxlen=HISTORY_KEPT, approximate=True)
            await pipe.execute()
        for event in events:
            if event["event"] == "raised":
                log.warning("alert raised", alert=event["id"], message=event["message"], value=event["value"])
            else:
                log.info("alert cleared", alert=event["id"])
            if self.webhook is not None:
                self.webhook.send(event)

    async def aclose(self) -> None:
        if self._running is not None:
            with contextlib.suppress(Exception):
                await self._running
        if self.webhook is not None:
            await self.webhook.aclose()


def _sum_hashes(hashes: list[dict[bytes, bytes]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for h in hashes:
        for field, value in h.items():
            name = field.decode()
            total[name] = total.get(name, 0) + int(value)
    return total


async def active_alerts(redis: Redis) -> list[dict[str, Any]]:
    raw: dict[bytes, bytes] = await redis.hgetall(keys.alerts_active())  # type: ignore[misc]
    return sorted((orjson.loads(v) for v in raw.values()), key=lambda a: (a.get("raisedAt") or "", a["id"]))


async def alert_history(redis: Redis, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent raise and clear events, newest first."""
    entries = await redis.xrevrange(keys.alerts_history(), count=limit)
    return [orjson.loads(fields[b"d"]) for _, fields in entries]


async def degraded_providers(redis: Redis) -> set[str]:
    """Providers with an error-rate alert in progress (for health and routing)."""
    ids: list[bytes] = await redis.hkeys(keys.alerts_active())  # type: ignore[misc]
    return {i.decode().split(":", 1)[1] for i in ids if i.startswith(b"error_rate:")}
