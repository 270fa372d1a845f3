"""The simulator's streams (`"stream": true`) over real HTTP: both providers' wire formats, read raw with
httpx and through the official `openai` and `anthropic` packages, the run-time settings, the mid-stream
faults and the stream counters."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from simulator import create_app
from simulator.app import ConnectionDropped
from tests.simulator.conftest import (
    AN_HEADERS,
    ANTHROPIC_KEY,
    CHAT,
    MESSAGES,
    OA_HEADERS,
    OPENAI_KEY,
    add_fault,
    an_body,
    oa_body,
    stats,
    wait_until,
)

Event = tuple[str | None, Any]  # (the `event:` name, the parsed `data:`; "[DONE]" as is)
ANTHROPIC_ORDER = ["message_start", "content_block_start", "ping"]
ANTHROPIC_CLOSING = ["content_block_stop", "message_delta", "message_stop"]


def sse_events(lines: Iterable[str]) -> Iterator[Event]:
    """Server-sent events from a response's lines, as they arrive."""
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line:
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            continue
        if data:
            joined = "\n".join(data)
            yield name, joined if joined == "[DONE]" else orjson.loads(joined)
        name, data = None, []


def read_stream(client: httpx.Client, path: str, headers: dict[str, str], body: dict[str, Any]) -> list[Event]:
    with client.stream("POST", path, headers=headers, json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        return list(sse_events(r.iter_lines()))


def oa_text(events: list[Event]) -> str:
    return "".join(
        d["choices"][0]["delta"].get("content") or "" for _, d in events if isinstance(d, dict) and d["choices"]
    )


def oa_content(events: list[Event]) -> list[str]:
    return [d["choices"][0]["delta"]["content"] for _, d in events[1:] if isinstance(d, dict) and _is_content(d)]


def _is_content(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or []
    return bool(choices) and choices[0]["finish_reason"] is None and "role" not in choices[0]["delta"]


def an_content(events: list[Event]) -> list[str]:
    return [d["delta"]["text"] for name, d in events if name == "content_block_delta"]


def config(client: httpx.Client, **settings: Any) -> dict[str, Any]:
    r = client.post("/_control/config", json=settings)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


@contextmanager
def open_stream(
    client: httpx.Client, path: str, headers: dict[str, str], body: dict[str, Any]
) -> Iterator[Iterator[Event]]:
    """A stream being read: the events as they come, the connection closed on leaving."""
    with client.stream("POST", path, headers=headers, json=body) as r:
        assert r.status_code == 200
        yield sse_events(r.iter_lines())


@pytest.fixture
def openai_client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{base_url}/openai/v1", max_retries=0) as c:
        yield c


@pytest.fixture
def anthropic_client(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=f"{base_url}/anthropic", max_retries=0) as c:
        yield c


# --- the wire formats --------------------------------------------------------------------------------


def test_openai_stream_is_the_non_streamed_answer_in_chunks(client: httpx.Client) -> None:
    whole = client.post(CHAT, headers=OA_HEADERS, json=oa_body()).json()
    events = read_stream(client, CHAT, OA_HEADERS, oa_body(stream=True, stream_options={"include_usage": True}))
    assert all(name is None for name, _ in events)
    assert events[-1] == (None, "[DONE]")
    chunks = [d for _, d in events[:-1]]
    first, usage_chunk, finish = chunks[0], chunks[-1], chunks[-2]
    for c in chunks:  # one completion: the same id, created, model and fingerprint on every chunk
        assert c["object"] == "chat.completion.chunk"
        assert (c["id"], c["created"], c["model"]) == (first["id"], first["created"], "gpt-4")
        assert c["system_fingerprint"] == first["system_fingerprint"] and c["system_fingerprint"].startswith("fp_")
    assert first["id"].startswith("chatcmpl-") and first["id"] != whole["id"]
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])
    content = oa_content(events)
    assert "".join(content) == whole["choices"][0]["message"]["content"]
    assert len(content) == whole["usage"]["completion_tokens"] == 64  # one chunk per token by default
    assert len(chunks) == len(content) + 3


def test_openai_stream_without_include_usage_has_no_usage(client: httpx.Client) -> None:
    events = read_stream(client, CHAT, OA_HEADERS, oa_body(stream=True, max_tokens=5))
    chunks = [d for _, d in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert oa_text(events) == "Simulated openai rep"
    assert events[-1] == (None, "[DONE]")


def test_openai_stream_of_n_choices(client: httpx.Client) -> None:
    whole = client.post(CHAT, headers=OA_HEADERS, json=oa_body(n=2)).json()
    events = read_stream(client, CHAT, OA_HEADERS, oa_body(n=2, stream=True, stream_options={"include_usage": True}))
    texts = ["", ""]
    for _, d in events[:-1]:
        for choice in d["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == [c["message"]["content"] for c in whole["choices"]]
    assert events[-2][1]["usage"] == whole["usage"]


def test_anthropic_stream_is_the_non_streamed_answer_in_chunks(client: httpx.Client) -> None:
    whole = client.post(MESSAGES, headers=AN_HEADERS, json=an_body(stop_sequences=["lazy"])).json()
    events = read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True, stop_sequences=["lazy"]))
    names = [name for name, _ in events]
    content = an_content(events)
    assert names == [*ANTHROPIC_ORDER, *["content_block_delta"] * len(content), *ANTHROPIC_CLOSING]
    assert all(d["type"] == name for name, d in events)  # the event: line names the data's type
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_01") and start["model"] == whole["model"]
    assert {k: start[k] for k in ("type", "role", "content", "stop_reason", "stop_sequence")} == {
        "type": "message",
        "role": "assistant",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    assert start["usage"] == {"input_tokens": whole["usage"]["input_tokens"], "output_tokens": 1}
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[3][1]["delta"]["type"] == "text_delta" and events[3][1]["index"] == 0
    assert "".join(content) == whole["content"][0]["text"]
    assert len(content) == whole["usage"]["output_tokens"]
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "stop_sequence", "stop_sequence": "lazy"},
        "usage": {"output_tokens": whole["usage"]["output_tokens"]},
    }


def test_openai_package_streams(client: httpx.Client, openai_client: openai.OpenAI) -> None:
    config(client, reply_tokens=20)  # a natural end: the stream helper refuses a cut ("length") answer
    whole = client.post(CHAT, headers=OA_HEADERS, json=oa_body()).json()
    params: dict[str, Any] = {"model": "gpt-4", "messages": oa_body()["messages"]}
    chunks = list(openai_client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == whole["choices"][0]["message"]["content"]
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.model_dump(exclude_none=True) == whole["usage"]
    with openai_client.chat.completions.stream(**params, stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == whole["choices"][0]["message"]["content"]
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == whole["usage"]["total_tokens"]


async def test_async_openai_package_streams(base_url: str, client: httpx.Client) -> None:
    whole = client.post(CHAT, headers=OA_HEADERS, json=oa_body()).json()
    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=f"{base_url}/openai/v1", max_retries=0) as ac:
        stream = await ac.chat.completions.create(model="gpt-4", messages=oa_body()["messages"], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == whole["choices"][0]["message"]["content"]


def test_anthropic_package_streams(client: httpx.Client, anthropic_client: anthropic.Anthropic) -> None:
    whole = client.post(MESSAGES, headers=AN_HEADERS, json=an_body(max_tokens=30)).json()
    body = an_body(max_tokens=30)
    with anthropic_client.messages.stream(
        model=body["model"], max_tokens=30, system=body["system"], messages=body["messages"]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole["content"][0]["text"] == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole["usage"]["input_tokens"],
        whole["usage"]["output_tokens"],
    )


def test_stream_validation(client: httpx.Client) -> None:
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body(stream_options={"include_usage": True}))
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "type": "invalid_request_error",
            "param": "stream_options",
            "code": None,
        }
    }
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body(stream="yes"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    assert r.json()["error"]["code"] == "invalid_type"
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body(stream=True, stream_options={"include_usage": 1}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options.include_usage"
    r = client.post(MESSAGES, headers=AN_HEADERS, json=an_body(stream="yes"))
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "invalid_request_error", "message": "stream: Input should be a valid boolean"}
    # a bad streamed request is answered as JSON, not as a stream
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body(stream=True, messages=[]))
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert stats(client)["openai"]["streams"]["started"] == 0


# --- run-time settings ---------------------------------------------------------------------------------


def test_stream_chunks_per_provider(client: httpx.Client) -> None:
    answer = config(client, provider="openai", stream_chunks=3, stream_interval_ms=5)
    assert answer["openai"]["stream_chunks"] == 3 and answer["openai"]["stream_interval_ms"] == 5
    assert answer["anthropic"]["stream_chunks"] is None  # one per token
    whole = client.post(CHAT, headers=OA_HEADERS, json=oa_body()).json()["choices"][0]["message"]["content"]
    content = oa_content(read_stream(client, CHAT, OA_HEADERS, oa_body(stream=True)))
    assert len(content) == 3 and "".join(content) == whole
    assert len(an_content(read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True)))) == 64
    config(client, stream_chunks=1000)  # both; more chunks than characters: one a character
    assert oa_content(read_stream(client, CHAT, OA_HEADERS, oa_body(stream=True, max_tokens=2))) == list("Simulate")
    config(client, stream_chunks=None)  # back to one per token
    assert len(oa_content(read_stream(client, CHAT, OA_HEADERS, oa_body(stream=True)))) == 64
    config(client, reply_tokens=0)  # an empty answer: the opening and closing events only
    events = read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True))
    assert [n for n, _ in events] == [*ANTHROPIC_ORDER, *ANTHROPIC_CLOSING]
    for bad in ({"stream_chunks": 0}, {"stream_chunks": "3"}, {"stream_chunks": True}, {"stream_interval_ms": -1}):
        r = client.post("/_control/config", json=bad)
        assert r.status_code == 400 and "stream_" in r.json()["error"]


def test_interval_spaces_the_chunks(client: httpx.Client) -> None:
    config(client, provider="anthropic", stream_chunks=4, stream_interval_ms=100)
    arrivals: list[float] = []
    with open_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True)) as events:
        for name, _ in events:
            if name == "content_block_delta":
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    assert arrivals[-1] - arrivals[0] >= 0.29  # three gaps of 100 ms: each chunk left when produced


def test_latency_and_first_byte_delay_the_head(client: httpx.Client) -> None:
    client.post("/_control/latency", json={"provider": "openai", "ms": 100})
    rule = add_fault(client, provider="openai", mode="first_byte", latency_ms=200, count=1)
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200  # not streamed: not used up
    [listed] = client.get("/_control/faults").json()["faults"]
    assert listed["id"] == rule and listed["hits"] == 0
    started = time.monotonic()
    with client.stream("POST", CHAT, headers=OA_HEADERS, json=oa_body(stream=True)) as r:
        head_after = time.monotonic() - started
        assert r.status_code == 200
        assert oa_text(list(sse_events(r.iter_lines())))
    assert head_after >= 0.29
    assert client.get("/_control/faults").json() == {"faults": []}


# --- faults before the stream ----------------------------------------------------------------------------


def test_status_hang_and_drop_before_the_stream(client: httpx.Client, openai_client: openai.OpenAI) -> None:
    add_fault(client, provider="openai", status=429, retry_after=2, count=1)
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.chat.completions.create(model="gpt-4", messages=oa_body()["messages"], stream=True)
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.response.headers["content-type"] == "application/json"
    add_fault(client, provider="anthropic", mode="drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True))
    add_fault(client, provider="anthropic", mode="hang", seconds=0.2, count=1)
    assert an_content(read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True)))
    s = stats(client)
    assert s["openai"]["by_status"] == {"429": 1}
    assert s["anthropic"]["by_status"] == {"dropped": 1, "200": 1}
    assert s["anthropic"]["streams"]["started"] == s["anthropic"]["streams"]["completed"] == 1


# --- faults mid-stream ------------------------------------------------------------------------------------


def test_openai_error_event_after_k_chunks(client: httpx.Client, openai_client: openai.OpenAI) -> None:
    add_fault(client, provider="openai", mode="stream_error", after_chunks=3, count=1)
    events = read_stream(client, CHAT, OA_HEADERS, oa_body(stream=True, stream_options={"include_usage": True}))
    assert len(oa_content(events)) == 3
    assert events[-1] == (
        None,
        {
            "error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )
    assert all(d != "[DONE]" for _, d in events)
    add_fault(client, provider="openai", mode="stream_error", after_chunks=2, message="boom", code="c1", count=1)
    received: list[str] = []
    with pytest.raises(openai.APIError, match="boom") as info:
        for chunk in openai_client.chat.completions.create(model="gpt-4", messages=oa_body()["messages"], stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert info.value.code == "c1"
    assert len([r for r in received if r]) == 2
    s = stats(client)["openai"]
    assert s["streams"] == {"started": 2, "completed": 0, "client_closed": 0, "error_event": 2, "dropped": 0}
    assert s["by_status"] == {"stream_error": 2}


def test_anthropic_error_event_after_k_chunks(client: httpx.Client, anthropic_client: anthropic.Anthropic) -> None:
    add_fault(client, provider="anthropic", mode="stream_error", after_chunks=2, count=1)
    events = read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True))
    assert [n for n, _ in events] == [*ANTHROPIC_ORDER, "content_block_delta", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    add_fault(client, provider="anthropic", mode="stream_error", after_chunks=0, error_type="api_error", count=1)
    body = an_body()
    with pytest.raises(anthropic.APIStatusError) as info:  # noqa: SIM117
        with anthropic_client.messages.stream(model=body["model"], max_tokens=100, messages=body["messages"]) as stream:
            assert "".join(stream.text_stream) == ""  # raises before any text
    assert info.value.body == {"type": "error", "error": {"type": "api_error", "message": "Overloaded"}}


def test_stream_drop_after_k_chunks(client: httpx.Client, openai_client: openai.OpenAI) -> None:
    add_fault(client, provider="anthropic", mode="stream_drop", after_chunks=5, count=1)
    got: list[Event] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        open_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True)) as events,
    ):
        for event in events:
            got.append(event)
    assert len(an_content(got)) == 5 and "message_stop" not in [n for n, _ in got]
    add_fault(client, provider="openai", mode="stream_drop", after_chunks=1, count=1)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in openai_client.chat.completions.create(model="gpt-4", messages=oa_body()["messages"], stream=True):
            received.append(chunk)
    assert len(received) == 2  # the role, one content chunk
    wait_until(lambda: stats(client)["anthropic"]["in_flight"] == 0, what="the dropped stream to end")
    s = stats(client)
    assert s["anthropic"]["streams"]["dropped"] == s["openai"]["streams"]["dropped"] == 1
    assert s["anthropic"]["by_status"] == {"stream_drop": 1}
    assert an_content(read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True)))  # the client goes on


def test_stall_until_released_then_the_rest(client: httpx.Client) -> None:
    whole = client.post(CHAT, headers=OA_HEADERS, json=oa_body()).json()["choices"][0]["message"]["content"]
    add_fault(client, provider="openai", mode="stream_stall", after_chunks=4)
    content: list[str] = []
    with open_stream(client, CHAT, OA_HEADERS, oa_body(stream=True)) as events:
        for _, chunk in events:
            if isinstance(chunk, dict) and _is_content(chunk):
                content.append(chunk["choices"][0]["delta"]["content"])
                if len(content) == 4:  # the four chunks arrived before the stall: each was flushed
                    s = stats(client)["openai"]
                    assert s["in_flight"] == 1 and s["streams"]["started"] == 1 and s["streams"]["completed"] == 0
                    assert client.delete("/_control/faults").json() == {"removed": 1}
        assert chunk == "[DONE]"
    assert "".join(content) == whole
    assert stats(client)["openai"]["streams"]["completed"] == 1


def test_stall_for_seconds(client: httpx.Client) -> None:
    add_fault(client, provider="anthropic", mode="stream_stall", after_chunks=1, seconds=0.3, count=1)
    started = time.monotonic()
    events = read_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True))
    assert time.monotonic() - started >= 0.29
    assert len(an_content(events)) == 64 and events[-1][0] == "message_stop"


def test_fault_rule_validation(client: httpx.Client) -> None:
    for bad, fragment in (
        ({"provider": "openai", "mode": "stream_error", "after_chunks": -1}, "after_chunks"),
        ({"provider": "openai", "mode": "stream_drop", "after_chunks": "2"}, "after_chunks"),
        ({"provider": "openai", "mode": "status", "after_chunks": 2}, "after_chunks only applies"),
        ({"provider": "openai", "mode": "first_byte"}, "latency_ms"),
        ({"provider": "openai", "mode": "stream_flood"}, "mode must be one of"),
    ):
        r = client.post("/_control/faults", json=bad)
        assert r.status_code == 400 and fragment in r.json()["error"], (bad, r.text)
    rule = client.post("/_control/faults", json={"provider": "openai", "mode": "stream_stall", "after_chunks": 2})
    assert rule.json()["rule"]["after_chunks"] == 2


# --- the client leaving, the recorder ------------------------------------------------------------------------


def test_client_closing_mid_stream_is_counted(client: httpx.Client) -> None:
    # 100 chunks a second apart: the stream would last 100 s, so the count proves the stream stopped
    config(client, provider="openai", stream_chunks=100, stream_interval_ms=1000)
    with open_stream(client, CHAT, OA_HEADERS, oa_body(stream=True)) as events:
        for _, chunk in events:
            if isinstance(chunk, dict) and _is_content(chunk):
                break
        assert stats(client)["openai"]["in_flight"] == 1
    wait_until(lambda: stats(client)["openai"]["streams"]["client_closed"] == 1, what="the close to be seen")
    s = stats(client)["openai"]
    assert s["in_flight"] == 0 and s["by_status"] == {"client_closed": 1}
    assert s["streams"] == {"started": 1, "completed": 0, "client_closed": 1, "error_event": 0, "dropped": 0}


def test_client_closing_during_a_stall_is_counted(client: httpx.Client) -> None:
    add_fault(client, provider="anthropic", mode="stream_stall", after_chunks=0)
    with open_stream(client, MESSAGES, AN_HEADERS, an_body(stream=True)) as events:
        assert [next(events)[0] for _ in ANTHROPIC_ORDER] == ANTHROPIC_ORDER
    wait_until(lambda: stats(client)["anthropic"]["streams"]["client_closed"] == 1, what="the close to be seen")
    assert stats(client)["anthropic"]["in_flight"] == 0


def test_streamed_requests_are_recorded(client: httpx.Client) -> None:
    body = oa_body(stream=True, stream_options={"include_usage": True})
    read_stream(client, CHAT, OA_HEADERS, body)
    [entry] = client.get("/_control/requests", params={"provider": "openai"}).json()["requests"]
    assert entry["json"] == body and entry["path"] == CHAT


async def test_in_process_streams_and_drop() -> None:
    app = create_app(latency_ms=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as ac:
        r = await ac.post(CHAT, headers=OA_HEADERS, json=oa_body(stream=True, max_tokens=3))
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        await ac.post("/_control/faults", json={"provider": "anthropic", "mode": "stream_drop", "after_chunks": 1})
        with pytest.raises(ConnectionDropped):
            await ac.post(MESSAGES, headers=AN_HEADERS, json=an_body(stream=True))
    assert app.state.providers["anthropic"].streams["dropped"] == 1
