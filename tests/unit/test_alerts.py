"""shared.alerts against a real Redis: each alert is raised once per episode (however many processes
evaluate), clears when its condition ends, and reaches the webhook without a dead webhook mattering."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis.asyncio as aioredis

from devstack.procs import free_port
from shared import metrics
from shared.alerts import AlertEngine, Thresholds, WebhookSender, active_alerts, alert_history, degraded_providers
from shared.metrics import RequestRecord

pytestmark = pytest.mark.timeout(60)

THRESHOLDS = Thresholds(error_rate=0.10, latency_ms=5000, cost_per_hour_usd=100, window_s=300, min_requests=10)


def calls(provider: str, ok: int, failed: int, latency_ms: float = 100) -> list[RequestRecord]:
    good = [RequestRecord(provider, "gpt-4", "success", latency_ms) for _ in range(ok)]
    bad = [
        RequestRecord(provider, "gpt-4", "error", latency_ms, error_type="service_unavailable") for _ in range(failed)
    ]
    return good + bad


async def test_error_rate_alert_is_raised_once_by_one_of_many_processes_and_clears(r: aioredis.Redis) -> None:
    engines = [AlertEngine(r, THRESHOLDS) for _ in range(4)]  # four processes' evaluators
    await metrics.record(r, *calls("openai", ok=8, failed=1))
    assert await asyncio.gather(*(e.evaluate() for e in engines)) == [[], [], [], []]  # 11%, but 9 calls

    await metrics.record(r, *calls("openai", ok=9, failed=3))  # 4 of 21 failed: 19%
    events = [ev for batch in await asyncio.gather(*(e.evaluate() for e in engines)) for ev in batch]
    assert [(e["id"], e["event"]) for e in events] == [("error_rate:openai", "raised")]
    assert events[0]["value"] == pytest.approx(4 / 21, abs=1e-4)
    assert await degraded_providers(r) == {"openai"}

    await metrics.record(r, *calls("openai", ok=1, failed=1))  # still failing: no second alert
    assert [ev for e in engines for ev in await e.evaluate()] == []

    await metrics.record(r, *calls("openai", ok=40, failed=0))  # 5 of 63: 8%, the episode ends
    events = [ev for batch in await asyncio.gather(*(e.evaluate() for e in engines)) for ev in batch]
    assert [(e["id"], e["event"]) for e in events] == [("error_rate:openai", "cleared")]
    assert await active_alerts(r) == [] and await degraded_providers(r) == set()
    history = await alert_history(r)
    assert [(h["id"], h["event"]) for h in history] == [
        ("error_rate:openai", "cleared"),
        ("error_rate:openai", "raised"),
    ]


async def test_latency_and_cost_alerts(r: aioredis.Redis) -> None:
    engine = AlertEngine(r, THRESHOLDS)
    now = time.time()
    await metrics.record(r, *calls("anthropic", ok=10, failed=0, latency_ms=6000), now_s=now)
    await metrics.record(r, RequestRecord("openai", "gpt-4", "success", 10, cost_usd=60.0), now_s=now - 1800)
    await metrics.record(r, RequestRecord("openai", "gpt-4", "success", 10, cost_usd=45.0), now_s=now)
    events = await engine.evaluate(now_s=now)
    assert sorted(e["id"] for e in events) == ["cost:gateway", "latency:anthropic"]
    cost = next(e for e in events if e["type"] == "cost")
    assert cost["value"] == pytest.approx(105.0) and cost["threshold"] == 100

    await metrics.record(r, *calls("anthropic", ok=200, failed=0, latency_ms=50), now_s=now)
    events = await engine.evaluate(now_s=now)
    assert [(e["id"], e["event"]) for e in events] == [("latency:anthropic", "cleared")]
    # an hour on, the $60 spent half an hour before `now` has left the window
    events = await engine.evaluate(now_s=now + 1800 + 120)
    assert [(e["id"], e["event"]) for e in events] == [("cost:gateway", "cleared")]


async def test_thresholds_are_configurable(r: aioredis.Redis) -> None:
    strict = AlertEngine(r, Thresholds(error_rate=0.5, latency_ms=50, cost_per_hour_usd=0.01, min_requests=2))
    await metrics.record(r, *calls("openai", ok=2, failed=1, latency_ms=80))  # 1 in 3 failed: not over 50%
    await metrics.record(r, RequestRecord("openai", "gpt-4", "success", 1, cost_usd=0.02))
    assert sorted(e["id"] for e in await strict.evaluate()) == ["cost:gateway", "latency:openai"]


async def test_evaluation_is_throttled_per_process(r: aioredis.Redis) -> None:
    engine = AlertEngine(r, THRESHOLDS, interval_s=3600)
    await metrics.record(r, *calls("openai", ok=0, failed=20))
    engine.evaluate_soon()
    engine.evaluate_soon()  # within the interval: nothing more is scheduled
    assert engine._running is not None
    events = await engine._running
    assert [e["id"] for e in events] == ["error_rate:openai"]
    assert not engine.due()


async def _capture_server(received: asyncio.Queue[bytes]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await received.put(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_transitions_reach_the_webhook(r: aioredis.Redis) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()
    server, port = await _capture_server(received)
    engine = AlertEngine(r, THRESHOLDS, webhook=WebhookSender(f"http://127.0.0.1:{port}/hook", timeout_s=2))
    try:
        await metrics.record(r, *calls("anthropic", ok=0, failed=12))
        await engine.evaluate()
        posted = orjson.loads(await asyncio.wait_for(received.get(), 10))
        assert posted["id"] == "error_rate:anthropic" and posted["event"] == "raised"
    finally:
        await engine.aclose()
        server.close()


async def test_a_dead_webhook_changes_nothing(r: aioredis.Redis) -> None:
    dead = WebhookSender(f"http://127.0.0.1:{free_port()}/hook", timeout_s=0.5, queue_size=2)
    engine = AlertEngine(r, THRESHOLDS, webhook=dead)
    await metrics.record(r, *calls("openai", ok=0, failed=12, latency_ms=9000))
    events = await engine.evaluate()  # returns at once: the POSTs are someone else's business
    assert len(events) == 2
    for n in range(5):
        dead.send({"id": f"extra-{n}"})  # the queue is bounded: extras are dropped, not piled up
    assert dead.dropped >= 3
    await engine.aclose()
    assert {a["id"] for a in await active_alerts(r)} == {"error_rate:openai", "latency:openai"}
