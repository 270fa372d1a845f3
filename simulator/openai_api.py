"""OpenAI Chat Completions wire format: validation, replies and OpenAI's real error bodies."""

from __future__ import annotations

import random
import time
from typing import Any

from simulator import openai_stream, openai_tools
from simulator.asgi import Headers, Request, Response
from simulator.faults import FaultRule
from simulator.state import ProviderState
from simulator.stream_reply import StreamReply, split_text
from simulator.tokens import CHARS_PER_TOKEN, complete, prompt_tokens

ROLES = ("system", "user", "assistant", "developer", "tool")
MODELS = ("gpt-4", "gpt-4-turbo", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo")
_MODELS_CREATED = 1_686_935_002
_STATUS_MESSAGES = {
    400: ("invalid_request_error", "Invalid request (simulated fault).", None),
    403: (
        "invalid_request_error",
        "You are not allowed to access this resource.",
        None,
    ),
    404: (
        "invalid_request_error",
        "The model `{model}` does not exist or you do not have access to it.",
        "model_not_found",
    ),
    409: ("invalid_request_error", "Conflict (simulated fault).", None),
    422: ("invalid_request_error", "Unprocessable request (simulated fault).", None),
    500: (
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
        None,
    ),
    502: ("server_error", "The server is overloaded or not ready yet.", None),
    503: ("server_error", "The server is overloaded or not ready yet.", None),
    504: ("server_error", "The server is overloaded or not ready yet.", None),
}
_RATE_LIMIT_MSG = (
    "Rate limit reached for {model} in organization org-simulated on requests per min (RPM): "
    "Limit 500, Used 500, Requested 1. Please try again in {wait}. "
    "Visit https://platform.openai.com/account/rate-limits to learn more."
)
_QUOTA_MSG = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_NO_KEY_MSG = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
    "username) if you're accessing the API from your browser and are prompted for a username and "
    "password. You can obtain an API key from https://platform.openai.com/account/api-keys."
)
_BAD_JSON_MSG = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON. If you have trouble figuring out how to fix this, please contact us through our "
    "help center at help.openai.com.)"
)


def error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Headers | None = None,
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(status, body, headers or [])


def mask_key(key: str) -> str:
    """OpenAI's masking: a short prefix, stars, the last 4 characters; never the whole key."""
    if len(key) < 12:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def request_headers(rng: random.Random) -> Headers:
    return [
        (b"x-request-id", f"req_{rng.getrandbits(128):032x}".encode()),
        (b"openai-version", b"2020-10-01"),
        (b"openai-processing-ms", b"1"),
    ]


def check_auth(req: Request, ps: ProviderState) -> Response | None:
    auth = req.header(b"authorization") or ""
    scheme, _, key = auth.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return error(401, _NO_KEY_MSG)
    if not ps.key_ok(key):
        msg = (
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return error(401, msg, code="invalid_api_key")
    return None


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a decimal"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _check_number(body: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool) -> Response | None:
    v = body.get(name)
    if v is None:
        return None
    kind = "integer" if integer else "decimal"
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        want = "an integer" if integer else "a decimal"
        return error(
            400,
            f"Invalid type for '{name}': expected {want}, but got {_json_type(v)} instead.",
            param=name,
            code="invalid_type",
        )
    if v < lo:
        return error(
            400,
            f"Invalid '{name}': {kind} below minimum value. Expected a value >= {lo:g}, but got {v} instead.",
            param=name,
            code=f"{kind}_below_min_value",
        )
    if hi is not None and v > hi:
        return error(
            400,
            f"Invalid '{name}': {kind} above maximum value. Expected a value <= {hi:g}, but got {v} instead.",
            param=name,
            code=f"{kind}_above_max_value",
        )
    return None


def _content_text(content: Any) -> str | None:
    """A message content as text: a string or a list of text parts; None if malformed."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return None
            parts.append(part["text"])
        return "".join(parts)
    return None


def _check_stream(body: dict[str, Any]) -> Response | None:
    """`stream` a boolean; `stream_options` an object, and only with `stream` (as OpenAI answers)."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return error(
            400,
            f"Invalid type for 'stream': expected a boolean, but got {_json_type(stream)} instead.",
            param="stream",
            code="invalid_type",
        )
    options = body.get("stream_options")
    if options is None:
        return None
    if not stream:
        return error(
            400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    if not isinstance(options, dict):
        return error(
            400,
            f"Invalid type for 'stream_options': expected an object, but got {_json_type(options)} instead.",
            param="stream_options",
            code="invalid_type",
        )
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        return error(
            400,
            "Invalid type for 'stream_options.include_usage': expected a boolean, but got "
            f"{_json_type(include)} instead.",
            param="stream_options.include_usage",
            code="invalid_type",
        )
    return None


def chat_completions(req: Request, ps: ProviderState, rng: random.Random) -> Response | StreamReply:
    if not req.json_ok:
        return error(400, _BAD_JSON_MSG)
    body = req.json
    if not isinstance(body, dict):
        return error(
            400,
            f"Invalid type for request body: expected an object, but got {_json_type(body)} instead.",
            code="invalid_type",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "you must provide a model parameter")
    if ps.strict_models and model not in MODELS:
        return error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    messages = body.get("messages")
    if messages is None:
        return error(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        return error(
            400,
            f"Invalid type for 'messages': expected an array, but got {_json_type(messages)} instead.",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        return error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    chars = 0
    last_user = ""
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return error(
                400,
                f"Invalid type for 'messages[{i}]': expected an object, but got {_json_type(m)} instead.",
                param=f"messages[{i}]",
                code="invalid_type",
            )
        role = m.get("role")
        if role not in ROLES:
            if role is None:
                return error(
                    400,
                    f"Missing required parameter: 'messages[{i}].role'.",
                    param=f"messages[{i}].role",
                    code="missing_required_parameter",
                )
            return error(
                400,
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                "'user', 'function', 'tool', and 'developer'.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        content = m.get("content")
        read = openai_tools.content_text(content, role, i)
        if len(read) == 3:
            return error(400, read[0], param=read[1], code=read[2])
        text, images = read
        chars += len(text) + images * openai_tools.IMAGE_TOKENS * CHARS_PER_TOKEN
        if role == "user":
            last_user = text
    for name, lo, hi, integer in (
        ("max_tokens", 1, None, True),
        ("max_completion_tokens", 1, None, True),
        ("n", 1, 128, True),
        ("temperature", 0, 2, False),
        ("top_p", 0, 1, False),
        ("presence_penalty", -2, 2, False),
        ("frequency_penalty", -2, 2, False),
    ):
        bad = _check_number(body, name, lo, hi, integer)
        if bad is not None:
            return bad
    problem = openai_tools.conversation_problem(body)
    if problem is not None:
        return error(400, problem[0], param=problem[1], code=problem[2])
    stop = body.get("stop")
    stops: list[str]
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = stop
    else:
        return error(
            400,
            "Invalid 'stop': expected a string or an array of at most 4 strings.",
            param="stop",
            code="invalid_value",
        )
    bad = _check_stream(body)
    if bad is not None:
        return bad
    n_prompt = prompt_tokens(chars, len(messages))
    limit = ps.context_limit(model)
    if n_prompt > limit:
        msg = (
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {n_prompt} tokens. Please reduce the length of the messages."
        )
        return error(400, msg, param="messages", code="context_length_exceeded")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    done = complete("openai", last_user, ps.reply_tokens, max_tokens, stops)
    finish = "length" if done.reason == "length" else "stop"
    choices, completion_tokens = openai_tools.choices(body, done.text, finish, rng)
    usage = {
        "prompt_tokens": n_prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": n_prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    completion_id = f"chatcmpl-{rng.getrandbits(116):029x}"
    if body.get("stream"):
        first = choices[0]["message"]
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        return openai_stream.reply(
            chunk_id=completion_id,
            created=int(time.time()),
            model=model,
            system_fingerprint=f"fp_{rng.getrandbits(40):010x}",
            n=len(choices),
            pieces=split_text(first.get("content") or "", ps.stream_chunks),
            finish_reason=choices[0]["finish_reason"],
            usage=usage if include_usage else None,
            headers=request_headers(rng),
            tool_calls=first.get("tool_calls"),
        )
    return Response(
        200,
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": usage,
        },
        request_headers(rng),
    )


def list_models(req: Request, ps: ProviderState, rng: random.Random) -> Response:
    data = [{"id": m, "object": "model", "created": _MODELS_CREATED, "owned_by": "openai"} for m in MODELS]
    return Response(200, {"object": "list", "data": data})


def not_found(req: Request) -> Response:
    return error(404, f"Invalid URL ({req.method} {req.path.removeprefix('/openai')})")


def _fmt(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


def fault_response(rule: FaultRule, req: Request) -> Response:
    """An injected status with the body (and headers) OpenAI really sends for it."""
    model = req.json.get("model", "gpt-4") if req.json_ok and isinstance(req.json, dict) else "gpt-4"
    status = rule.status
    headers: Headers = []
    retry_after = rule.retry_after
    code: str | None
    if status == 429:
        code = rule.code or "rate_limit_exceeded"
        if retry_after is None and code == "rate_limit_exceeded":
            retry_after = 1.0
        if code == "insufficient_quota":
            type_, message = "insufficient_quota", _QUOTA_MSG
        else:
            wait = f"{int((retry_after or 0) * 1000)}ms" if (retry_after or 0) < 1 else f"{retry_after:g}s"
            type_, message = "requests", _RATE_LIMIT_MSG.format(model=model, wait=wait)
            reset = f"{_fmt(retry_after or 0)}s".encode()
            headers += [
                (b"x-ratelimit-limit-requests", b"500"),
                (b"x-ratelimit-remaining-requests", b"0"),
                (b"x-ratelimit-reset-requests", reset),
                (b"x-ratelimit-limit-tokens", b"40000"),
                (b"x-ratelimit-remaining-tokens", b"39000"),
                (b"x-ratelimit-reset-tokens", b"1.5s"),
            ]
    elif status == 401:
        auth = req.header(b"authorization") or ""
        key = auth.partition(" ")[2].strip()
        code = rule.code or "invalid_api_key"
        type_ = "invalid_request_error"
        message = (
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
    else:
        type_, message, default_code = _STATUS_MESSAGES.get(
            status,
            (
                "server_error" if status >= 500 else "invalid_request_error",
                f"Simulated error {status}.",
                None,
            ),
        )
        message = message.format(model=model)
        code = rule.code or default_code
    if retry_after is not None:
        headers += [
            (b"retry-after", _fmt(retry_after).encode()),
            (b"retry-after-ms", str(int(retry_after * 1000)).encode()),
        ]
    return error(status, rule.message or message, rule.error_type or type_, None, code, headers)
