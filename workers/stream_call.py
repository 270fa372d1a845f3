"""One streamed provider call: the provider's deltas relayed, batch by batch, to the request's followers.

Until the first delta has been relayed, a failure is an ordinary failed call (the processor retries and
fails over, invisibly to the client). After it, a failure cuts the stream (`StreamCut`): what the client
has seen cannot be taken back, so there is no retry nor failover, and the request ends with an error
its client reads as the stream's last event, never a clean end. A client that went away (`abandon`, or
the relay's answer) stops the upstream call: the connection is closed, so the provider stops generating.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from redis.asyncio import Redis

from plumbing.interfaces import TripSender
from shared import scripts
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall, ProviderResult, Usage
from shared.stream_events import encode_delta
from shared.streams import RelayVerdict, StreamRelay
from shared.token_estimate import prompt_tokens, text_tokens
from workers.guard import Settlement
from workers.provider_client import ProviderClient


class StreamCut(GatewayError):
    """The provider's stream failed after deltas reached the client: the request ends with this error
    (retryable for the caller, who may ask again; never retried nor failed over by the worker)."""

    def __init__(self, cause: GatewayError | None, sent: int, provider: str, message: str | None = None) -> None:
        why = message or (cause.message if cause is not None else "the stream broke off")
        super().__init__(
            cause.type if cause is not None else ErrorType.SERVICE_UNAVAILABLE,
            f"{why} (after {sent} streamed delta{'s' if sent != 1 else ''}; the stream is incomplete)",
            retryable=True,
            provider=provider,
        )


class StreamAbandoned(Exception):
    """The stream's client went away: the upstream call was stopped. `result`: what it produced;
    `settlement`: the guards' settlement of the call, set by the processor."""

    def __init__(self, result: ProviderResult, latency_ms: float) -> None:
        super().__init__("the client went away")
        self.result = result
        self.latency_ms = latency_ms
        self.settlement: Settlement | None = None


class StreamNotOurs(Exception):
    """The request is no longer this worker's (its lease lapsed and another worker retook it)."""


class StreamCalls:
    """The streamed calls of one worker process, by request id (so that `abandon` can stop one)."""

    def __init__(self, client: ProviderClient, trips: TripSender, redis: Redis, worker: str) -> None:
        self.client = client
        self.trips = trips
        self.worker = worker
        self._relay_script = redis.register_script(scripts.STREAM_RELAY.source)
        self._running: dict[str, asyncio.Task[ProviderResult]] = {}
        self._partial: dict[str, ProviderResult] = {}  # what an abandoned stream had produced
        self.first_delta_ms: dict[str, float] = {}  # each running stream's time to its first delta

    def abandon(self, request_id: str) -> bool:
        """Stop a running stream whose client went away (its worker was told on its own channel)."""
        task = self._running.get(request_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def call(self, call: ProviderCall, relay: StreamRelay, on_first: Callable[[], None]) -> ProviderResult:
        """Stream one provider call through `relay`; the assembled result once the provider ends it.
        Raises GatewayError before the first relayed delta, StreamCut after it, StreamAbandoned when the
        client went away, StreamNotOurs when another worker holds the request now."""
        rid = relay.request_id
        started = time.perf_counter()
        reader = asyncio.get_running_loop().create_task(self._pump(call, relay, on_first))
        self._running[rid] = reader
        try:
            try:
                await asyncio.wait([reader])
            except asyncio.CancelledError:  # this job itself is cancelled (the worker stops)
                reader.cancel()
                await asyncio.wait([reader])
                raise
            if reader.cancelled():  # only `abandon` cancels the reader alone
                partial = self._partial.pop(rid, None) or ProviderResult("", "stop", Usage(), call.model)
                raise StreamAbandoned(_usage_so_far(partial, call), (time.perf_counter() - started) * 1000)
            return reader.result()
        finally:
            self._running.pop(rid, None)
            self._partial.pop(rid, None)

    async def _pump(self, call: ProviderCall, relay: StreamRelay, on_first: Callable[[], None]) -> ProviderResult:
        rid = relay.request_id
        stream_cm = self.client.open_stream(call)
        try:
            async with stream_cm as stream:
                try:
                    async for batch in stream:
                        verdict = await self._relay(relay, [encode_delta(d) for d in batch])
                        if relay.sent == len(batch) and verdict.sent:  # the first batch reached the client
                            if stream.first_delta_ms is not None:
                                self.first_delta_ms[rid] = stream.first_delta_ms
                            on_first()
                        if verdict.abandoned:
                            self._partial[rid] = stream.result()
                            raise asyncio.CancelledError
                        if verdict.not_ours:
                            raise StreamNotOurs
                        if verdict.interrupted:
                            raise StreamCut(None, 0, self.client.provider, INTERRUPTED)
                    return stream.result()
                except asyncio.CancelledError:
                    self._partial.setdefault(rid, stream.result())
                    raise
        except GatewayError as err:
            if relay.sent and not isinstance(err, StreamCut):
                raise StreamCut(err, relay.sent, self.client.provider) from None
            raise

    async def _relay(self, relay: StreamRelay, deltas: list[bytes]) -> RelayVerdict:
        (reply,) = await self.trips.send(lambda trip: relay.relay_into(trip, self._relay_script, deltas))
        if isinstance(reply, Exception):
            raise reply
        return relay.relayed(reply, len(deltas))


INTERRUPTED = "the worker streaming this request stopped mid-stream; what it had sent cannot be sent again by another"


def _usage_so_far(result: ProviderResult, call: ProviderCall) -> ProviderResult:
    """A stopped stream's result with its usage: as the provider reported it, else (OpenAI reports it
    only at the end) estimated from the prompt and the text produced, as the limits estimate a call."""
    usage = result.usage
    if usage.completion_tokens or not result.content:
        return result
    estimated = Usage(
        prompt_tokens=usage.prompt_tokens or prompt_tokens(call.messages),
        completion_tokens=text_tokens(result.content),
        cached_prompt_tokens=usage.cached_prompt_tokens,
    )
    return dataclasses.replace(result, usage=estimated)
