"""OpenAI's chat features beyond text, as the simulator checks and answers them: content parts (in
OpenAI's own shapes: `image_url` objects, `input_audio`, `file`), tools and tool messages, response
formats, logprobs and `n`. Errors read as OpenAI's do (message, `param`, `code`)."""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
from collections.abc import Callable
from typing import Any

from simulator.schema_sample import sample
from simulator.tokens import count_tokens

PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
_PART_KEYS = {
    "text": {"type", "text"},
    "image_url": {"type", "image_url"},
    "input_audio": {"type", "input_audio"},
    "file": {"type", "file"},
    "refusal": {"type", "refusal"},
}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DATA_URL = re.compile(r"data:image/(png|jpeg|gif|webp);base64,(.*)", re.DOTALL)
IMAGE_TOKENS = 85  # a low-detail image, as OpenAI counts it
_BAD_IMAGE = (
    "You uploaded an unsupported image. Please make sure your image is below 20 MB in size and is of one the"
    " following formats: ['png', 'jpeg', 'gif', 'webp']."
)

# (message, param, code): the error the caller turns into its 400
Problem = tuple[str, str | None, str | None]


def _image_problem(image: Any, where: str) -> Problem | None:
    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
        return (
            f"Invalid type for '{where}.image_url': expected an object with a url.",
            f"{where}.image_url",
            "invalid_type",
        )
    url = image["url"]
    if url.startswith(("https://", "http://")):
        return None
    found = _DATA_URL.fullmatch(url)
    if found is None:
        return (_BAD_IMAGE, None, "invalid_image_format")
    try:
        base64.b64decode(found[2], validate=True)
    except (binascii.Error, ValueError):
        return (_BAD_IMAGE, None, "invalid_image_format")
    return None


def content_text(content: Any, role: str, i: int) -> tuple[str, int] | Problem:
    """A message's text and how many images it carries, or the problem with its content."""
    if content is None and role == "assistant":
        return "", 0
    if isinstance(content, str):
        return content, 0
    where = f"messages[{i}].content"
    if not isinstance(content, list):
        return (
            f"Invalid type for '{where}': expected one of a string or array of objects, but got something else.",
            where,
            "invalid_type",
        )
    texts: list[str] = []
    images = 0
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_KEYS or not isinstance(part, dict):
            allowed = ", ".join(f"'{t}'" for t in PART_TYPES)
            return (f"Invalid value: '{kind}'. Supported values are: {allowed}.", f"{at}.type", "invalid_value")
        unknown = sorted(set(part) - _PART_KEYS[kind])
        if unknown:
            return (f"Unrecognized request argument supplied: {unknown[0]}", f"{at}.{unknown[0]}", "unknown_parameter")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                return (f"Missing required parameter: '{at}.text'.", f"{at}.text", "missing_required_parameter")
            texts.append(part["text"])
        elif kind == "image_url":
            if role != "user":
                return (
                    "Image URLs are only allowed for messages with role 'user', but this message with role"
                    f" '{role}' contains an image URL.",
                    f"{at}",
                    "invalid_value",
                )
            problem = _image_problem(part.get("image_url"), at)
            if problem is not None:
                return problem
            images += 1
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
    return "".join(texts), images


def _tools_problem(body: dict[str, Any]) -> Problem | None:
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return ("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
        for k, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                return (
                    f"Missing required parameter: 'tools[{k}].function'.",
                    f"tools[{k}].function",
                    "missing_required_parameter",
                )
            name = function.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                return (
                    f"Invalid 'tools[{k}].function.name': string does not match pattern.",
                    f"tools[{k}].function.name",
                    "invalid_value",
                )
            parameters = function.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                return (
                    f"Invalid type for 'tools[{k}].function.parameters': expected an object.",
                    f"tools[{k}].function.parameters",
                    "invalid_type",
                )
            names.append(name)
    choice = body.get("tool_choice")
    if choice is not None:
        if not names:
            return (
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
                None,
            )
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            if name not in names:
                return (
                    f"Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools'"
                    " parameter.",
                    "tool_choice",
                    None,
                )
        elif choice not in ("auto", "none", "required"):
            return ("Invalid value for 'tool_choice'.", "tool_choice", "invalid_value")
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return ("Invalid value for 'response_format.type'.", "response_format.type", "invalid_value")
        if kind == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("name"), str):
            return (
                "Missing required parameter: 'response_format.json_schema.name'.",
                "response_format.json_schema.name",
                "missing_required_parameter",
            )
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        return ("Invalid value for 'top_logprobs': logprobs must be set to true.", "top_logprobs", None)
    return None


def conversation_problem(body: dict[str, Any]) -> Problem | None:
    """Tools, tool choice, response format; and each tool message answering a call just before it."""
    problem = _tools_problem(body)
    if problem is not None:
        return problem
    open_ids: list[str] = []
    asked_at = 0
    for i, m in enumerate(body["messages"]):
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in open_ids:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with"
                    " 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            open_ids.remove(m["tool_call_id"])
            continue
        if open_ids:
            return _unanswered(open_ids, asked_at)
        calls = m.get("tool_calls")
        if role == "assistant" and isinstance(calls, list):
            open_ids = [str(c.get("id")) for c in calls if isinstance(c, dict)]
            asked_at = i
    if open_ids:
        return _unanswered(open_ids, asked_at)
    return None


def _unanswered(ids: list[str], at: int) -> Problem:
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each"
        f" 'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
        f"messages.[{at}].role",
        None,
    )


def _tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool the simulated model calls: none once the last message is a tool's result."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or body["messages"][-1].get("role") == "tool":
        return None
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        named: dict[str, Any] = next(t["function"] for t in tools if t["function"]["name"] == name)
        return named
    function: dict[str, Any] = tools[0]["function"]
    return function


def _logprobs(text: str, top: int) -> dict[str, Any]:
    tokens = text.split(" ")[:8]
    content = []
    for k, token in enumerate(tokens):
        token = token if k == 0 else " " + token
        alternatives = [{"token": token, "logprob": -0.01 * (r + 1), "bytes": list(token.encode())} for r in range(top)]
        content.append({"token": token, "logprob": -0.01, "bytes": list(token.encode()), "top_logprobs": alternatives})
    return {"content": content, "refusal": None}


def answer(body: dict[str, Any], text: str, finish: str, rng: random.Random) -> tuple[dict[str, Any], str, int]:
    """The first choice's (message, finish reason, completion tokens) for the plain reply `text`: a call
    of a tool, the JSON of a response format, or the reply to a tool's result."""
    last = body["messages"][-1]
    if last.get("role") == "tool":
        result = last.get("content")
        result_text = result if isinstance(result, str) else json.dumps(result)
        text, finish = f"Simulated openai answer from the tool result: {result_text[:60]}", "stop"
    function = _tool_to_call(body)
    if function is not None:
        arguments = json.dumps(sample(function.get("parameters") or {"type": "object"}))
        call = {
            "id": f"call_{rng.getrandbits(96):024x}",
            "type": "function",
            "function": {"name": function["name"], "arguments": arguments},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
        return message, "tool_calls", count_tokens(function["name"] + arguments)
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        text, finish = json.dumps(sample(fmt["json_schema"].get("schema") or {"type": "object"})), "stop"
    elif fmt.get("type") == "json_object":
        text, finish = json.dumps({"reply": text}), "stop"
    return {"role": "assistant", "content": text, "refusal": None}, finish, count_tokens(text)


def choices(body: dict[str, Any], text: str, finish: str, rng: random.Random) -> tuple[list[dict[str, Any]], int]:
    """Every choice asked for (`n`), with logprobs when asked; and the completion tokens of them all."""
    message, finish, tokens = answer(body, text, finish, rng)
    logprobs: Callable[[], dict[str, Any] | None] = (
        (lambda: _logprobs(message["content"] or "", int(body.get("top_logprobs") or 0)))
        if body.get("logprobs")
        else (lambda: None)
    )
    n = int(body.get("n") or 1)
    out = [{"index": i, "message": message, "logprobs": logprobs(), "finish_reason": finish} for i in range(n)]
    return out, tokens * n
