"""Streaming through the queue (issue 16): real Redis, real workers, the simulator over HTTP, and the
official `openai` package as the client.

The session stack serves the tests that inject no faults; faults and timeouts run on a stack of this
module's own (`streams_stack`), whose breakers and limits never bind (tests/integration/conftest.py).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from devstack.procs import wait_until
from devstack.stack import Stack
from tests.integration.conftest import Upstream, start_stack, user_chat

SPEC_CHAT = "/api/v1/llm/chat/completions"


# -- reading SSE as a client does ---------------------------------------------------------------


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-Sent Events from a response's lines: {"id", "event", "data"} (comments skipped)."""
    event: dict[str, Any] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                event["data"] = "\n".join(data)
                yield event
            event, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name in ("id", "event"):
                event[name] = value


def read_stream(
    client: httpx.Client, body: dict[str, Any], path: str = SPEC_CHAT
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    with client.stream("POST", path, json={**body, "stream": True}) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        return resp, list(sse_events(resp.iter_lines()))


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(orjson.loads(e["data"])["content"] for e in events if e.get("event") == "delta")


# -- the session stack: what a client sees ------------------------------------------------------


def test_gateway_route_streams_deltas_then_done_with_the_whole_answer(api: httpx.Client, upstream: Upstream) -> None:
    upstream.config(stream_chunks=8)
    body = user_chat("Tell me about streams", provider="openai", cache=False)
    resp, events = read_stream(api, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    rid = resp.headers["x-gateway-request-id"]
    deltas = [e for e in events if e.get("event") == "delta"]
    assert len(deltas) == 8
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "done"
    done = orjson.loads(events[-1]["data"])
    whole = api.post(SPEC_CHAT, json=body).json()["data"]
    assert text_of(events) == done["content"] == whole["content"]
    assert done["id"] == rid and done["usage"] == whole["usage"]
    assert done["cost"] == whole["cost"] and done["attempts"][0]["provider"] == "openai"
    assert upstream.requests("openai", rid)[0]["json"]["stream"] is True


def test_openai_package_streams_sync_and_async_with_usage(stack: Stack, upstream: Upstream) -> None:
    upstream.config(stream_chunks=5)
    client = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=stack.token(), max_retries=0)
    messages: Any = [{"role": "user", "content": "Say something streamed"}]
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]

    async def async_text() -> str:
        aclient = openai.AsyncOpenAI(base_url=f"{stack.api_url}/v1", api_key=stack.token(), max_retries=0)
        out = ""
        stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        async for chunk in stream:
            out += chunk.choices[0].delta.content or "" if chunk.choices else ""
        await aclient.close()
        return out

    import asyncio

    assert asyncio.run(async_text()) == text

    # the SDK's own stream helper accumulates the chunks into the final completion
    with client.chat.completions.stream(model="gpt-4o-mini", messages=messages) as helper:
        for _ in helper:
            pass
        final = helper.get_final_completion()
    assert final.choices[0].message.content == text


def test_bad_stream_input_gets_clear_4xx(api: httpx.Client, stack: Stack) -> None:
    resp = api.post(SPEC_CHAT, json=user_chat(stream="yes"))
    assert resp.status_code == 422 and "stream" in resp.text
    oa = api.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "x"}],
            "stream_options": {"include_usage": True},
        },
    )
    assert oa.status_code == 400 and oa.json()["error"]["param"] == "stream_options"
    assert api.get("/api/v1/llm/jobs/" + "0" * 32 + "/stream").status_code == 404
    done = api.post(SPEC_CHAT, json=user_chat("a whole one", cache=False)).json()["data"]
    bad = api.get(f"/api/v1/llm/jobs/{done['id']}/stream", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "Last-Event-ID"  # a validation error
    beyond = api.get(f"/api/v1/llm/jobs/{done['id']}/stream", headers={"Last-Event-ID": "99"})
    assert beyond.status_code == 400
    with stack.client(role="user", sub="someone-else") as other:
        assert other.get(f"/api/v1/llm/jobs/{done['id']}/stream").status_code == 404


def test_a_finished_request_reads_as_one_delta_then_done(api: httpx.Client) -> None:
    done = api.post(SPEC_CHAT, json=user_chat("the whole of it", cache=False)).json()["data"]
    with api.stream("GET", f"/api/v1/llm/jobs/{done['id']}/stream") as resp:
        events = list(sse_events(resp.iter_lines()))
    assert [(e["id"], e["event"]) for e in events] == [("1", "delta"), ("2", "done")]
    assert text_of(events) == done["content"]
    assert api.get(f"/api/v1/llm/jobs/{done['id']}/stream", headers={"Last-Event-ID": "2"}).status_code == 204


def test_async_job_streams_to_a_follower_connected_before_it_runs(api: httpx.Client, upstream: Upstream) -> None:
    upstream.config(stream_chunks=6, stream_interval_ms=20)
    job = api.post("/api/v1/llm/jobs", json=user_chat("async streamed", stream=True, cache=False)).json()["data"]
    with api.stream("GET", f"/api/v1/llm/jobs/{job['id']}/stream") as resp:
        events = list(sse_events(resp.iter_lines()))
    assert [e["event"] for e in events] == ["delta"] * 6 + ["done"]
    assert text_of(events) == orjson.loads(events[-1]["data"])["content"]


def test_resume_after_disconnect_gives_each_event_once_with_one_upstream_call(
    api: httpx.Client, upstream: Upstream
) -> None:
    upstream.config(stream_chunks=20, stream_interval_ms=30)
    body = user_chat("resume me", provider="openai", cache=False, stream=True)
    first: list[dict[str, Any]] = []
    with api.stream("POST", SPEC_CHAT, json=body) as resp:
        rid = resp.headers["x-gateway-request-id"]
        for event in sse_events(resp.iter_lines()):
            first.append(event)
            if len(first) == 5:
                break  # the connection drops here
    with api.stream("GET", f"/api/v1/llm/jobs/{rid}/stream", headers={"Last-Event-ID": first[-1]["id"]}) as resp:
        rest = list(sse_events(resp.iter_lines()))
    events = first + rest
    assert [int(e["id"]) for e in events] == list(range(1, 22))
    assert events[-1]["event"] == "done"
    assert text_of(events) == orjson.loads(events[-1]["data"])["content"]
    assert len(upstream.requests("openai", rid)) == 1


def test_cached_answer_is_replayed_as_a_stream(api: httpx.Client) -> None:
    body = user_chat("cache me for streams", temperature=0, cache=True)
    whole = api.post(SPEC_CHAT, json=body).json()["data"]
    resp, events = read_stream(api, body)
    assert resp.status_code == 200
    done = orjson.loads(events[-1]["data"])
    assert done["cached"] is True and text_of(events) == whole["content"]


# -- faults, timeouts, disconnects: a stack of this module's own -------------------------------


@pytest.fixture(scope="module")
def streams_stack() -> Iterator[Stack]:
    """Two OpenAI workers (one can be SIGKILLed mid-stream), one Anthropic worker; one-second stream
    timeouts; a short grace before a stream whose client went away is stopped."""
    s = start_stack(
        {"openai": [{}, {}], "anthropic": [{}]},
        PROVIDER_FIRST_BYTE_TIMEOUT_S="1",
        PROVIDER_STREAM_IDLE_TIMEOUT_S="1",
        STREAM_ABANDON_GRACE_S="0.3",
        ENABLE_LLM_CACHING="false",
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def sup(streams_stack: Stack) -> Iterator[Upstream]:
    up = Upstream(streams_stack)
    up.reset()
    yield up
    up.release()
    up.reset()


@pytest.fixture
def sapi(streams_stack: Stack) -> Iterator[httpx.Client]:
    with streams_stack.client(role="user") as client:
        yield client


def job_of(client: httpx.Client, rid: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/v1/llm/jobs/{rid}").json()["data"]
    return data


def test_failover_before_the_first_token_is_invisible(sapi: httpx.Client, sup: Upstream) -> None:
    sup.fault("openai", mode="status", status=503, count=3)  # every try on OpenAI fails before streaming
    resp, events = read_stream(sapi, user_chat("fail over quietly", provider="openai"))
    assert resp.status_code == 200, resp.text
    done = orjson.loads(events[-1]["data"])
    assert events[-1]["event"] == "done" and done["provider"] == "anthropic"
    assert [a["provider"] for a in done["attempts"]] == ["openai"] * 3 + ["anthropic"]
    assert text_of(events) == done["content"]


def test_slow_first_byte_times_out_and_fails_over(sapi: httpx.Client, sup: Upstream) -> None:
    sup.fault("openai", mode="first_byte", latency_ms=3000, count=3)
    resp, events = read_stream(sapi, user_chat("slow to start", provider="openai"))
    done = orjson.loads(events[-1]["data"])
    assert resp.status_code == 200 and done["provider"] == "anthropic"
    assert [a["error"]["type"] for a in done["attempts"][:-1]] == ["timeout_error"] * 3, done["attempts"]


def test_error_after_k_chunks_ends_with_an_error_event_never_done(
    streams_stack: Stack, sapi: httpx.Client, sup: Upstream
) -> None:
    sup.config(stream_chunks=10, stream_interval_ms=20)  # the deltas reach the client before the error
    sup.fault("openai", mode="stream_error", after_chunks=3, count=1)
    resp, events = read_stream(sapi, user_chat("break off", provider="openai"))
    assert [e["event"] for e in events] == ["delta"] * 3 + ["error"]
    error = orjson.loads(events[-1]["data"])["error"]
    assert error["type"] == "service_unavailable" and "after 3 streamed deltas" in error["message"]
    assert [a["provider"] for a in error["attempts"]] == ["openai"]  # no retry, no failover once streaming
    assert job_of(sapi, resp.headers["x-gateway-request-id"])["status"] == "failed"

    # the official client sees an error, not a complete answer
    sup.fault("openai", mode="stream_error", after_chunks=3, count=1)
    client = openai.OpenAI(base_url=f"{streams_stack.api_url}/v1", api_key=streams_stack.token(), max_retries=0)
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "break off"}], stream=True
        ):
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen)  # it had the first deltas


def test_dropped_connection_mid_stream_is_an_error_event(sapi: httpx.Client, sup: Upstream) -> None:
    sup.config(stream_chunks=10, stream_interval_ms=20)
    sup.fault("openai", mode="stream_drop", after_chunks=2, count=1)
    _, events = read_stream(sapi, user_chat("drop me", provider="openai"))
    assert [e["event"] for e in events] == ["delta"] * 2 + ["error"]


def test_a_stalled_stream_ends_with_a_timeout_event_and_frees_its_slot(sapi: httpx.Client, sup: Upstream) -> None:
    sup.config(stream_chunks=10, stream_interval_ms=20)
    sup.fault("openai", mode="stream_stall", after_chunks=2, count=1)
    _, events = read_stream(sapi, user_chat("stall", provider="openai"))
    assert [e["event"] for e in events] == ["delta"] * 2 + ["error"]
    assert orjson.loads(events[-1]["data"])["error"]["type"] == "timeout_error"
    # the slot is free again: the next streams are served
    for _ in range(3):
        _, after = read_stream(sapi, user_chat("next", provider="openai"))
        assert after[-1]["event"] == "done"


def test_client_disconnect_stops_the_upstream_call_and_counts_cancelled(sapi: httpx.Client, sup: Upstream) -> None:
    sup.config(stream_chunks=200, stream_interval_ms=50)
    before = sup.stats()["openai"]["streams"]["client_closed"]
    with sapi.stream("POST", SPEC_CHAT, json=user_chat("long one", provider="openai", stream=True)) as resp:
        rid = resp.headers["x-gateway-request-id"]
        for i, _ in enumerate(sse_events(resp.iter_lines())):
            if i == 2:
                break
    wait_until(lambda: sup.stats()["openai"]["streams"]["client_closed"] > before, 10, "the upstream call closed")
    wait_until(lambda: job_of(sapi, rid)["status"] == "cancelled", 10, "the request cancelled")
    error = job_of(sapi, rid)["error"]
    assert error["type"] == "cancelled_error" and "went away" in error["message"]
    assert 0 < error["usage"]["completionTokens"] < 200


def test_resume_within_the_grace_keeps_the_stream_alive(sapi: httpx.Client, sup: Upstream) -> None:
    sup.config(stream_chunks=30, stream_interval_ms=40)
    first: list[dict[str, Any]] = []
    with sapi.stream("POST", SPEC_CHAT, json=user_chat("keep going", provider="openai", stream=True)) as resp:
        rid = resp.headers["x-gateway-request-id"]
        for event in sse_events(resp.iter_lines()):
            first.append(event)
            if len(first) == 3:
                break
    with sapi.stream("GET", f"/api/v1/llm/jobs/{rid}/stream", headers={"Last-Event-ID": "3"}) as again:
        rest = list(sse_events(again.iter_lines()))
    assert [int(e["id"]) for e in first + rest] == list(range(1, 32))
    assert rest[-1]["event"] == "done"


def test_worker_killed_mid_stream_ends_with_an_error_never_a_hang(
    streams_stack: Stack, sapi: httpx.Client, sup: Upstream, redis_of: Any
) -> None:
    sup.config(stream_chunks=100, stream_interval_ms=50)
    events: list[dict[str, Any]] = []
    victim_pid = 0
    with sapi.stream("POST", SPEC_CHAT, json=user_chat("kill my worker", provider="openai", stream=True)) as resp:
        rid = resp.headers["x-gateway-request-id"]
        for event in sse_events(resp.iter_lines()):
            events.append(event)
            if len(events) == 3:
                worker = redis_of(streams_stack).hget(f"llm:req:{{{rid}}}", "worker")
                victim_pid = int(worker.rsplit(":", 2)[1])
                victim = next(p for p in streams_stack.workers["openai"] if p.popen.pid == victim_pid)
                victim.kill()
    assert victim_pid
    assert events[-1]["event"] == "error"
    assert "stopped mid-stream" in orjson.loads(events[-1]["data"])["error"]["message"]
    assert len(sup.requests("openai", rid)) == 1  # the retaking worker did not call the provider again
    streams_stack.workers["openai"].remove(victim)
    streams_stack.start_worker("openai")  # the stack whole again for later tests
    streams_stack.wait_workers({"openai": 2})


def test_identical_streams_in_flight_share_one_upstream_stream(api: httpx.Client, upstream: Upstream) -> None:
    upstream.config(stream_chunks=15, stream_interval_ms=30)
    prompt = f"coalesce this stream {uuid.uuid4().hex}"
    body = user_chat(prompt, temperature=0, cache=True, provider="openai")
    results: list[list[dict[str, Any]]] = []

    def one() -> None:
        results.append(read_stream(api, body)[1])

    first = threading.Thread(target=one)
    first.start()
    upstream.wait_in_flight("openai")  # the leader is streaming
    one()
    first.join()
    texts = {text_of(events) for events in results}
    assert len(texts) == 1 and all(events[-1]["event"] == "done" for events in results)
    calls = [r for r in upstream.requests("openai") if r["json"]["messages"][-1]["content"] == prompt]
    assert len(calls) == 1


def test_anthropic_streams_in_openai_chunks_and_metrics_count_ttft(
    stack: Stack, admin_api: httpx.Client, upstream: Upstream
) -> None:
    upstream.config(stream_chunks=4)
    client = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=stack.token(), max_retries=0)
    messages: Any = [{"role": "user", "content": "Claude, stream to me"}]
    chunks = list(client.chat.completions.create(model="claude-3-haiku-20240307", messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model="claude-3-haiku-20240307", messages=messages)
    assert text == whole.choices[0].message.content
    performance = admin_api.get("/api/v1/llm/metrics", params={"provider": "anthropic"}).json()["data"]["performance"]
    assert performance["streamedRequests"] >= 1 and performance["p50Ttft"] > 0
    exposition = admin_api.get("/metrics").text
    assert 'llm_gateway_time_to_first_token_seconds_count{provider="anthropic"}' in exposition
    assert "llm_gateway_streams_open" in exposition
