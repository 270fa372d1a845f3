"""What a worker reports about each request once it ends: metrics, logs and alerts plug in here.

Observers run after the outcome is stored and signalled, so they never add to the caller's latency.
Each queues its Redis commands on the request's round trip (a `Trip`: the limits and breaker
settlement ride on it too), which the processor sends once; a failing observer is logged and never fails the request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from plumbing.interfaces import Trip
from shared.errors import GatewayError
from shared.schemas import Cost, JobPayload, ProviderResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Finished:
    """One request's end, as seen by the worker that ended it."""

    payload: JobPayload
    provider: str
    latency_ms: float
    result: ProviderResult | None = None
    cost: Cost | None = None
    error: GatewayError | None = None
    failed_over: bool = False
    ttft_ms: float | None = None  # a streamed call's time to its first delta


class RequestObserver(Protocol):
    def on_finished(self, event: Finished, trip: Trip) -> None: ...


class Observers:
    def __init__(self, observers: Sequence[RequestObserver] = ()) -> None:
        self.observers = list(observers)

    def finished(self, event: Finished, trip: Trip) -> None:
        for observer in self.observers:
            try:
                observer.on_finished(event, trip)
            except Exception:
                log.exception("observer %s failed", type(observer).__name__)

    def describe(self) -> list[dict[str, Any]]:
        return [{"observer": type(o).__name__} for o in self.observers]
