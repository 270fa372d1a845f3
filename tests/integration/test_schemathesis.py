"""Property-based API testing: schemathesis over every operation of the gateway's own OpenAPI schema.

A stack of our own (real Redis, workers, simulator) serves the schema and answers every generated
call, authenticated as an admin so the admin-only routes are exercised too. Valid inputs (positive
mode) and invalid ones (negative mode) alike must never get a 5xx, and every answer must be what the
schema says it is: documented status code, content type, headers and body; schema-valid input must
be accepted, schema-invalid input refused, and a call without credentials refused.

Each operation runs as its own Hypothesis test so that one failing operation does not hide the
others; failures are collected and reported together. (schemathesis' lazy `from_fixture` loader,
which would do the same, relies on a pytest internal that pytest 9 removed.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from devstack.stack import Stack
from shared.batches import parse_window
from shared.schemas import PARTS_BY_ROLE
from shared.settings import Settings
from tests.integration.conftest import start_stack

# Generated cases per operation and mode, the same ones on every run (derandomized): CI stays
# deterministic and the whole module stays well under a minute on a 2-core machine.
MAX_EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 25}
STATUSES: dict[tuple[str, str], Counter[int]] = {}  # (operation, mode) -> status codes answered
MAX_WINDOW_S = Settings.model_fields["batch_max_window_s"].default


@schemathesis.serializer("application/x-ndjson")
def _json_lines(_: schemathesis.SerializationContext, value: Any) -> bytes:
    """A batch upload as JSON Lines: the schema documents it as an array, one item per line."""
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def not_a_server_error_but_the_callers_timeout(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """No 5xx, except the 504 `timeout_error` of a synchronous request whose own `timeout` (the
    caller's choice, possibly a millisecond) ran out: that answer is the documented behaviour."""
    if response.status_code == 504 and isinstance(case.body, dict) and case.body.get("timeout") is not None:
        error = response.json().get("error") or {}
        if error.get("type") == "timeout_error":
            return None
    return not_a_server_error(ctx, response, case)


# All of schemathesis' checks (max_response_time is off unless configured: speed is the benchmarks'
# business); not_a_server_error is replaced by the variant above.
EXCLUDED_CHECKS: list[schemathesis.CheckFunction] = [not_a_server_error]
ADDITIONAL_CHECKS: list[schemathesis.CheckFunction] = [not_a_server_error_but_the_callers_timeout]


def satisfy_rules_beyond_the_schema(case: schemathesis.Case[Any]) -> None:
    """Rules JSON Schema cannot state, applied to generated valid input so that it stays valid: a
    batch's custom ids are unique and its completion window within the configured maximum, a log
    window does not end before it starts, OpenAI's `stream_options` comes only with `stream`."""
    path = case.operation.path
    if path == "/api/v1/llm/batches" and case.method == "POST":
        window = case.query.get("completionWindow")
        if window and not 1 <= parse_window(window) <= MAX_WINDOW_S:
            case.query["completionWindow"] = "24h"
    if path == "/api/v1/llm/batches" and isinstance(case.body, list):
        for i, item in enumerate(case.body):
            for name in ("customId", "custom_id"):
                if isinstance(item, dict) and isinstance(item.get(name), str):
                    item[name] = f"{i}-{item[name]}"[:512]
    if path == "/v1/embeddings" and isinstance(case.body, dict):  # only OpenAI embeds, its models
        case.body.pop("provider", None)
        case.body["model"] = "text-embedding-3-small"
        if isinstance(case.body.get("dimensions"), int | float):
            case.body["dimensions"] = min(int(case.body["dimensions"]), 1536)
    if path in CHAT_PATHS and isinstance(case.body, dict):
        conversation_that_holds(case.body)
        stream_that_holds(case.body)
    if path == "/api/v1/llm/batches" and isinstance(case.body, list):
        for item in case.body:
            if isinstance(item, dict):
                conversation_that_holds(item["body"] if isinstance(item.get("body"), dict) else item)
                stream_that_holds(item["body"] if isinstance(item.get("body"), dict) else item)
    if path == "/api/v1/llm/logs":
        start, end = case.query.get("startTime"), case.query.get("endTime")
        if start and end and _as_ms(end) < _as_ms(start):
            case.query["startTime"], case.query["endTime"] = end, start


def stream_that_holds(body: dict[str, Any]) -> None:
    """A stream's rules: OpenAI's `stream_options` only with `stream: true`; a stream has one choice
    and no logprobs."""
    if not body.get("stream"):
        body.pop("stream_options", None)
    else:
        for key in ("n", "logprobs", "topLogprobs", "top_logprobs"):
            body.pop(key, None)


CHAT_PATHS = ("/api/v1/llm/chat/completions", "/api/v1/llm/jobs", "/v1/chat/completions")
OPENAI_ONLY = ("n", "logprobs", "topLogprobs", "top_logprobs", "seed", "frequencyPenalty", "frequency_penalty")
OPENAI_ONLY += ("presencePenalty", "presence_penalty", "logitBias", "logit_bias", "serviceTier", "service_tier")
OPENAI_ONLY += ("reasoningEffort", "reasoning_effort", "store")
ANTHROPIC_ONLY = ("topK", "top_k", "thinking", "anthropicBeta", "anthropic_beta")


def conversation_that_holds(body: dict[str, Any]) -> None:
    """A chat body's rules beyond its schema: tool messages only answer calls (generated ones become
    user messages, generated calls are dropped), image URLs are https or data URLs, tool parameters and
    response schemas are JSON Schema, a named tool choice names a tool, the routing hint names a
    provider that serves what the body asks for, top logprobs come with logprobs."""
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        for name in ("toolCalls", "tool_calls", "toolCallId", "tool_call_id"):
            m.pop(name, None)
        if m.get("role") == "tool":
            m["role"] = "user"
        if m.get("content") is None:
            m["content"] = "hello"
        if isinstance(m.get("content"), list):  # the parts each role takes
            allowed = PARTS_BY_ROLE.get(str(m.get("role")), frozenset())
            m["content"] = [p for p in m["content"] if isinstance(p, dict) and p.get("type") in allowed] or "hello"
    if body.get("functions") is not None:  # the legacy `functions`: as the tools they stand for
        if body.get("tools") is None:
            body["tools"] = [{"type": "function", "function": f} for f in body["functions"]]
            if body.get("function_call") is not None:
                body["tool_choice"] = body["function_call"]
                if isinstance(body["tool_choice"], dict):
                    body["tool_choice"] = {"type": "function", "function": body["tool_choice"]}
        del body["functions"]
        body.pop("function_call", None)
    tools = body.get("tools") or []
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            tool["function"]["parameters"] = {"type": "object"}
    names = [t["function"]["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    for key in ("toolChoice", "tool_choice"):
        choice = body.get(key)
        if choice is not None and not names:
            del body[key]
        elif isinstance(choice, dict):
            choice["function"] = {"name": names[0]}
    for key in ("responseFormat", "response_format"):
        fmt = body.get(key)
        if (
            isinstance(fmt, dict)
            and fmt.get("type") == "json_schema"
            and not (fmt.get("jsonSchema") or fmt.get("json_schema"))
        ):
            fmt["jsonSchema" if key == "responseFormat" else "json_schema"] = {"name": "answer"}  # its type's object
        spec = (body.get(key) or {}).get("jsonSchema") or (body.get(key) or {}).get("json_schema")
        if isinstance(spec, dict):
            spec["schema"] = {"type": "object"}
    if body.get("topLogprobs") is not None or body.get("top_logprobs") is not None:
        body["logprobs"] = True
    parts = [p for m in body.get("messages") or () if isinstance(m.get("content"), list) for p in m["content"]]
    openai_parts = any(p.get("type") in ("file", "input_audio") for p in parts)
    options = (k for k in OPENAI_ONLY if body.get(k) is not None and body[k] is not False)
    if openai_parts or any(not (k == "n" and body[k] == 1) for k in options):
        for k in ANTHROPIC_ONLY:
            body.pop(k, None)
        if body.get("provider") == "anthropic":
            del body["provider"]
    elif any(body.get(k) is not None for k in ANTHROPIC_ONLY) and body.get("provider") == "openai":
        del body["provider"]


def _as_ms(value: str) -> float:
    if value.isascii() and value.isdigit():
        return int(value)
    parsed = datetime.fromisoformat(value.upper())
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000


@pytest.fixture(scope="module")
def schema_stack() -> Iterator[Stack]:
    s = start_stack({"openai": [{}], "anthropic": [{}]})
    try:
        yield s
    finally:
        s.stop()


def _run_operation(
    operation: schemathesis.APIOperation[Any, Any, Any, Any], mode: GenerationMode
) -> FailureGroup | AssertionError | None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def run(case: schemathesis.Case[Any]) -> None:
        if mode is GenerationMode.POSITIVE:
            satisfy_rules_beyond_the_schema(case)
        response = case.call_and_validate(
            excluded_checks=EXCLUDED_CHECKS, additional_checks=ADDITIONAL_CHECKS, timeout=30
        )
        STATUSES.setdefault((operation.label, mode.value), Counter())[response.status_code] += 1

    try:
        run()
    except (FailureGroup, AssertionError) as exc:
        return exc
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        # an operation without parameters or body has no invalid input to send
    return None


def test_every_operation_conforms_to_the_schema(schema_stack: Stack) -> None:
    # Schemathesis applies the token to every operation the schema says needs the JWT, and knows it
    # did (so it can check that the same call without it is refused).
    token = schema_stack.token(role="admin")
    # schemathesis' statuses of a rejection, and the 413 of a body over the size limit (refused before
    # it is read: generated invalid input can be that big)
    rejected = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"JWT": {"bearer": token}}},
            "checks": {"negative_data_rejection": {"expected-statuses": rejected}},
        }
    )
    api_schema = schemathesis.openapi.from_url(f"{schema_stack.api_url}/openapi.json", config=config)
    api_schema.config.update(base_url=schema_stack.api_url)
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation of the schema is invalid: {result}"
        operation = result.ok()
        operations += 1
        for mode in MAX_EXAMPLES:
            found = _run_operation(operation, mode)
            if found is not None:
                failures.append(f"== {operation.label} ({mode.value}) ==\n{found}")
    assert operations >= 20, "the schema lost operations"
    assert not failures, "\n\n".join(failures)
    # positive_data_acceptance takes a 401 for an answer: make sure the token was sent and honoured,
    # and that every operation not naming a resource by id (those get 404s) answered with success
    for (label, mode_name), statuses in STATUSES.items():
        if mode_name == GenerationMode.POSITIVE.value:
            assert not statuses.keys() & {401, 403}, f"{label}: {dict(statuses)}"
            assert "{" in label or any(200 <= s < 300 for s in statuses), f"{label}: {dict(statuses)}"
    # an accepted job or batch item that broke a worker would not show in any answer
    for proc in schema_stack.group.procs:
        if proc.name.startswith(("api", "worker")):
            assert "Traceback" not in proc.log(), f"{proc.name} logged an exception:\n{proc.log()[-4000:]}"
