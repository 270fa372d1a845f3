"""Anthropic Messages wire format: validation, replies and Anthropic's real error bodies."""

from __future__ import annotations

import random
from typing import Any

from simulator import anthropic_stream, anthropic_tools
from simulator.asgi import Headers, Request, Response
from simulator.faults import FaultRule
from simulator.state import ProviderState
from simulator.stream_reply import StreamReply, split_text
from simulator.tokens import CHARS_PER_TOKEN, complete, prompt_tokens

MODELS = (
    ("claude-3-5-sonnet-20241022", "Claude 3.5 Sonnet (New)", "2024-10-22T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude 3.5 Haiku", "2024-10-22T00:00:00Z"),
    ("claude-3-opus-20240229", "Claude 3 Opus", "2024-02-29T00:00:00Z"),
    ("claude-3-sonnet-20240229", "Claude 3 Sonnet", "2024-02-29T00:00:00Z"),
    ("claude-3-haiku-20240307", "Claude 3 Haiku", "2024-03-07T00:00:00Z"),
)
_MODEL_IDS = frozenset(m[0] for m in MODELS)
ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request (simulated fault)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "Number of requests has exceeded your per-minute rate limit (simulated).",
    ),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


def error(status: int, type_: str, message: str, headers: Headers | None = None) -> Response:
    return Response(
        status,
        {"type": "error", "error": {"type": type_, "message": message}},
        headers or [],
    )


def invalid(message: str) -> Response:
    return error(400, "invalid_request_error", message)


def request_headers(rng: random.Random) -> Headers:
    return [(b"request-id", f"req_{rng.getrandbits(96):024x}".encode())]


def check_auth(req: Request, ps: ProviderState) -> Response | None:
    """`x-api-key`, or the key as a bearer token: the `anthropic` package (2.x) sends it that way."""
    key = (req.header(b"x-api-key") or "").strip()
    if not key:
        scheme, _, token = (req.header(b"authorization") or "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        return error(401, "authentication_error", "x-api-key header is required")
    if not ps.key_ok(key):
        return error(401, "authentication_error", "invalid x-api-key")
    if not req.header(b"anthropic-version"):
        return invalid("anthropic-version: header is required")
    return None


def _blocks_text(content: Any, where: str) -> str | Response:
    """A content (string or list of text blocks) as text, or the 400 it deserves."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return invalid(f"{where}: Input should be a valid list")
    parts: list[str] = []
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            return invalid(f"{where}.{j}: Input should be a valid dictionary or object to extract fields from")
        if block.get("type") != "text":
            return invalid(
                f"{where}.{j}.type: Input tag '{block.get('type')}' found using 'type' "
                "does not match any of the expected tags: 'text'"
            )
        text = block.get("text")
        if not isinstance(text, str):
            return invalid(f"{where}.{j}.text: Field required")
        if not text:
            return invalid(f"{where}.{j}.text: text content blocks must be non-empty")
        parts.append(text)
    return "".join(parts)


def _number(body: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool) -> Response | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        return invalid(f"{name}: Input should be a valid {'integer' if integer else 'number'}")
    if v < lo:
        return invalid(f"{name}: Input should be greater than or equal to {lo:g}")
    if hi is not None and v > hi:
        return invalid(f"{name}: Input should be less than or equal to {hi:g}")
    return None


def messages(req: Request, ps: ProviderState, rng: random.Random) -> Response | StreamReply:
    if not req.json_ok:
        return invalid("There was an error parsing the body of your request: invalid JSON")
    body = req.json
    if not isinstance(body, dict):
        return invalid("Input should be a valid dictionary or object to extract fields from")
    model = body.get("model")
    if model is None:
        return invalid("model: Field required")
    if not isinstance(model, str) or not model:
        return invalid("model: Input should be a valid string")
    if "max_tokens" not in body:
        return invalid("max_tokens: Field required")
    for name, lo, hi, integer in (
        ("max_tokens", 1, None, True),
        ("temperature", 0, 1, False),
        ("top_p", 0, 1, False),
        ("top_k", 0, None, True),
    ):
        bad = _number(body, name, lo, hi, integer)
        if bad is not None:
            return bad
    msgs = body.get("messages")
    if msgs is None:
        return invalid("messages: Field required")
    if not isinstance(msgs, list):
        return invalid("messages: Input should be a valid list")
    if not msgs:
        return invalid("messages: at least one message is required")
    chars = 0
    n_prompt_messages = len(msgs)
    system = body.get("system")
    if system is not None:
        sys_text = _blocks_text(system, "system")
        if isinstance(sys_text, Response):
            return sys_text
        chars += len(sys_text)
        n_prompt_messages += 1  # counted like OpenAI's system message, so both agree on tokens
    last_user = ""
    prev: str | None = None
    reads: list[anthropic_tools.Read] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return invalid(f"messages.{i}: Input should be a valid dictionary or object to extract fields from")
        role = m.get("role")
        if role == "system":
            return invalid(
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                'parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            return invalid('messages: first message must use the "user" role')
        if role == prev:
            return invalid(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        prev = role
        if "content" not in m:
            return invalid(f"messages.{i}.content: Field required")
        read = anthropic_tools.read_content(m["content"], f"messages.{i}.content", role)
        if isinstance(read, str):
            return invalid(read)
        reads.append(read)
        text = read.text
        final_assistant = i == len(msgs) - 1 and role == "assistant"
        if read.empty and not final_assistant:
            return invalid(
                f"messages.{i}: all messages must have non-empty content "
                "except for the optional final assistant message"
            )
        if final_assistant and text != text.rstrip():
            return invalid("messages: final assistant content cannot end with trailing whitespace")
        chars += len(text) + read.images * anthropic_tools.IMAGE_TOKENS * CHARS_PER_TOKEN
        if role == "user":
            last_user = text
    problem = anthropic_tools.pairing_problem(reads) or anthropic_tools.tools_problem(body)
    if problem is not None:
        return invalid(problem)
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return invalid("stop_sequences: Input should be a valid list of strings")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return invalid("stream: Input should be a valid boolean")
    if ps.strict_models and model not in _MODEL_IDS:
        return error(404, "not_found_error", f"model: {model}")
    n_prompt = prompt_tokens(chars, n_prompt_messages)
    limit = ps.context_limit(model)
    if n_prompt > limit:
        return invalid(f"prompt is too long: {n_prompt} tokens > {limit} maximum")
    done = complete("anthropic", last_user, ps.reply_tokens, body["max_tokens"], stops)
    reason = {"stop": "end_turn", "length": "max_tokens"}.get(done.reason, "stop_sequence")
    content, reason, output_tokens = anthropic_tools.answer(body, done.text, reason, reads[-1], rng)
    message_id = f"msg_01{rng.getrandbits(88):022x}"
    if stream:
        text = "".join(block["text"] for block in content if block.get("type") == "text")
        return anthropic_stream.reply(
            message_id=message_id,
            model=model,
            input_tokens=n_prompt,
            output_tokens=output_tokens,
            pieces=split_text(text, ps.stream_chunks),
            stop_reason=reason,
            stop_sequence=done.stop_sequence,
            headers=request_headers(rng),
            tool_uses=[block for block in content if block.get("type") == "tool_use"],
        )
    return Response(
        200,
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": done.stop_sequence,
            "usage": {"input_tokens": n_prompt, "output_tokens": output_tokens},
        },
        request_headers(rng),
    )


def list_models(req: Request, ps: ProviderState, rng: random.Random) -> Response:
    data = [{"type": "model", "id": i, "display_name": d, "created_at": c} for i, d, c in MODELS]
    return Response(
        200,
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        },
    )


def not_found(req: Request) -> Response:
    return error(404, "not_found_error", "Not Found")


def fault_response(rule: FaultRule, req: Request) -> Response:
    """An injected status with the body (and headers) Anthropic really sends for it."""
    status = rule.status
    type_, message = ERROR_TYPES.get(
        status,
        (
            "api_error" if status >= 500 else "invalid_request_error",
            f"Simulated error {status}.",
        ),
    )
    headers: Headers = []
    retry_after = rule.retry_after
    if status == 429:
        retry_after = 1.0 if retry_after is None else retry_after
        headers += [
            (b"anthropic-ratelimit-requests-limit", b"50"),
            (b"anthropic-ratelimit-requests-remaining", b"0"),
            (b"anthropic-ratelimit-tokens-limit", b"40000"),
            (b"anthropic-ratelimit-tokens-remaining", b"0"),
        ]
    if retry_after is not None:
        ra = str(int(retry_after)) if retry_after == int(retry_after) else f"{retry_after:g}"
        headers.append((b"retry-after", ra.encode()))
    return error(status, rule.error_type or type_, rule.message or message, headers)
