"""Streaming through the queue (issue 16): real Redis, real workers, the simulator over HTTP, and the
official `openai` package as the client.

The session stack serves the tests that inject no faults; faults and timeouts run on a stack of this
module's own (`streams_stack`), whose breakers and limits never bind (tests/integration/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson

from devstack.stack import Stack
from tests.integration.conftest import Upstream, user_chat

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
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"
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
