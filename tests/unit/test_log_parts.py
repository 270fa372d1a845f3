"""Request logs of structured requests: an image's bytes or address never reach a log (a placeholder with
its size does), a tool call's arguments and a tool's result are masked like any text."""

from __future__ import annotations

import orjson

from shared.request_log import request_entry, response_entry
from shared.schemas import CalledTool, JobPayload, ProviderCall, ProviderResult, Usage
from tests.provider_examples import DATA_URL, PNG_1PX

EMAIL = "alice.smith@example.com"


def payload(messages: list[dict[str, object]]) -> JobPayload:
    return JobPayload(
        request_id="r1", provider="anthropic", call=ProviderCall(model="claude-3-haiku", messages=messages)
    )


def test_images_are_logged_as_placeholders_with_their_size() -> None:
    url = f"https://example.com/{EMAIL}/cat.png"
    messages: list[dict[str, object]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"Who is {EMAIL}?"},
                {"type": "image_url", "image_url": {"url": DATA_URL}},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    entry = request_entry(payload(messages), max_chars=10_000)
    logged = orjson.dumps(entry).decode()
    assert PNG_1PX not in logged and url not in logged and EMAIL not in logged
    parts = entry["params"]["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "placeholder": f"[inline data, {len(PNG_1PX) * 3 // 4} bytes]"}
    assert parts[2] == {"type": "image_url", "placeholder": f"[linked image, URL of {len(url)} characters]"}


def test_tool_arguments_and_results_are_masked() -> None:
    arguments = orjson.dumps({"to": EMAIL}).decode()
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "mail her"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "send", "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"sent to {EMAIL}"},
    ]
    request = orjson.dumps(request_entry(payload(messages), max_chars=10_000)).decode()
    result = ProviderResult(
        "", "tool_calls", Usage(), "claude-3-haiku", tool_calls=[CalledTool("c", "send", arguments)]
    )
    response = orjson.dumps(response_entry(payload(messages), "anthropic", result, None, 1.0, 10_000)).decode()
    assert EMAIL not in request and EMAIL not in response
    assert '"name":"send"' in request and '"name":"send"' in response
