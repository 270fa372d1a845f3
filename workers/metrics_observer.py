"""The worker's observer: each finished request's metrics and logs.

It runs after the caller was answered. Per request it queues, on the request's round trip, the
counters' script call plus the request log (on the request's first hop) and the response or error
log. Alerts are judged in the background at most once per interval per process, from the same counters.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from plumbing.interfaces import Trip
from shared import metrics, pii
from shared.alerts import AlertEngine
from shared.metrics import RequestRecord
from shared.request_log import RequestLog, error_entry, request_entry, response_entry
from shared.settings import Settings
from workers.observer import Finished, Observers


class MetricsObserver:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.max_chars = settings.log_content_max_chars
        self.logs = RequestLog.from_settings(redis, settings)
        self.alerts = AlertEngine.from_settings(redis, settings)
        self.labels = metrics.model_labels(settings)
        pii.mask("warm-up: compile the masking patterns now, not on the first request 555-0100")

    def on_finished(self, event: Finished, trip: Trip) -> None:
        metrics.record_into(trip, [self._record(event)], time.time(), self.labels)
        for entry in self._log_entries(event):
            self.logs.add(trip.pipe, entry)
        self.alerts.evaluate_soon()

    def _record(self, event: Finished) -> RequestRecord:
        if event.result is not None:
            usage = event.result.usage
            return RequestRecord(
                provider=event.provider,
                model=event.result.model,
                # a stream whose client went away ended with what it had produced, and cost that
                outcome="success" if event.error is None else "cancelled",
                latency_ms=event.latency_ms,
                cost_usd=event.cost.total_cost if event.cost else None,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                tenant=event.payload.tenant,
                ttft_ms=event.ttft_ms,
            )
        # A failed request's model is whatever the caller asked for: the counters give it a label of
        # its own only if it is known or was admitted by a success (shared.metrics), else `other`.
        return RequestRecord(
            provider=event.provider,
            model=event.payload.call.model,
            outcome="error",
            latency_ms=event.latency_ms,
            error_type=event.error.type.value if event.error else None,
            final=not event.failed_over,
            tenant=event.payload.tenant,
        )

    def _log_entries(self, event: Finished) -> list[dict[str, Any]]:
        payload = event.payload
        entries: list[dict[str, Any]] = []
        # the request is logged once, by the hop it started on (no attempt made elsewhere before)
        if all(a.get("provider") == event.provider for a in payload.attempts):
            entries.append(request_entry(payload, self.max_chars))
        if event.result is not None:
            entries.append(
                response_entry(
                    payload,
                    event.provider,
                    event.result,
                    event.cost,
                    event.latency_ms,
                    self.max_chars,
                    cancelled=event.error is not None,
                )
            )
        elif event.error is not None:
            entries.append(
                error_entry(payload, event.provider, event.error, event.latency_ms, event.failed_over, self.max_chars)
            )
        return entries

    async def aclose(self) -> None:
        await self.alerts.aclose()


def default_observers(redis: Redis, settings: Settings) -> Observers:
    """The observers a worker runs unless told otherwise: none when observability is switched off."""
    return Observers([MetricsObserver(redis, settings)] if settings.observability_enabled else [])


async def close_observers(observers: Observers) -> None:
    for observer in observers.observers:
        if isinstance(observer, MetricsObserver):
            await observer.aclose()
