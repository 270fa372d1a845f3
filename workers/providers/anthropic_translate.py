"""OpenAI's chat shapes (the neutral `ProviderCall`) to Anthropic's Messages API, and its answer back.

Requests: system and developer messages become `system`; content parts become blocks (`image_url`
with an https URL becomes an `image` with a `url` source, a data URL a `base64` source); an
assistant's `tool_calls` become `tool_use` blocks (ids kept, arguments parsed from their JSON text);
`tool` messages become `tool_result` blocks of the user turn after them; `tools` and `tool_choice`
(`auto`/`none`/`required`/named -> `auto`/`none`/`any`/`tool`, `parallel_tool_calls: false` ->
`disable_parallel_tool_use`); a `json_schema` (or `json_object`) response format becomes a tool the
model is made to call, whose input is the answer: `parse_blocks` turns that call back into the JSON
text. Anthropic's `cache_control` marks on parts and tools are kept as they came.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.chat_parts import image_source
from shared.errors import ErrorType, GatewayError
from shared.schemas import CalledTool

CONTINUE_PLACEHOLDER = "(continue)"
# the tool standing for a JSON response format; a caller's own tool may not take its name
JSON_TOOL = "gateway_json_response"
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

Content = str | list[dict[str, Any]]


def _bad(param: str, message: str) -> GatewayError:
    return GatewayError(ErrorType.INVALID_REQUEST, message, param=param, retryable=False)


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict))


def _block(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        block: dict[str, Any] = {"type": "text", "text": part.get("text", "")}
    elif kind == "refusal":
        block = {"type": "text", "text": part.get("refusal", "")}
    elif kind == "image_url":
        url = str((part.get("image_url") or {}).get("url", ""))
        try:
            found = image_source(url)
        except ValueError as exc:
            raise _bad(where, str(exc)) from None
        source = (
            {"type": "url", "url": url}
            if found is None
            else {"type": "base64", "media_type": found[0], "data": found[1]}
        )
        block = {"type": "image", "source": source}
    else:
        raise _bad(where, f"content parts of type {kind!r} are not supported by Anthropic")
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    return [_block(p, f"{where}[{j}]") for j, p in enumerate(content)]


def _arguments(text: str, where: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise _bad(where, "a tool call's arguments must be a JSON object to be sent to Anthropic")
    return value


def _turn(message: dict[str, Any], i: int) -> tuple[str, Content]:
    """One non-system message as an Anthropic (role, content)."""
    role, content = message.get("role"), message.get("content")
    if role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id"),
            "content": content if isinstance(content, str) else _blocks(content, f"messages[{i}].content"),
        }
        return "user", [result]
    if role == "assistant":
        calls = message.get("tool_calls")
        if not calls:
            return "assistant", content if isinstance(content, str) else _blocks(content, f"messages[{i}].content")
        blocks = _blocks(content, f"messages[{i}].content")
        for j, call in enumerate(calls):
            function = call.get("function") or {}
            where = f"messages[{i}].tool_calls[{j}].function.arguments"
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "input": _arguments(function.get("arguments", ""), where),
                }
            )
        return "assistant", blocks
    return "user", content if isinstance(content, str) else _blocks(content, f"messages[{i}].content")


def _as_blocks(content: Content) -> list[dict[str, Any]]:
    return _blocks(content, "messages") if isinstance(content, str) else content


def _empty(content: Content) -> bool:
    return not content.strip() if isinstance(content, str) else not content


def translate_messages(
    messages: list[dict[str, Any]],
) -> tuple[Content | None, list[dict[str, Any]]]:
    """OpenAI-style messages -> (system, alternating user/assistant messages starting with user).

    System (and developer) messages become the top-level system (a string, or text blocks when one
    carries a `cache_control` mark); empty messages are dropped (Anthropic rejects empty content);
    consecutive same-role messages are merged (a `tool` message's result joins the user turn);
    a placeholder user turn is inserted when the conversation would not start with the user.
    """
    system_blocks: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.get("role") in ("system", "developer"):
            system_blocks.extend(_blocks(m.get("content"), f"messages[{i}].content"))
            continue
        role, content = _turn(m, i)
        if _empty(content):
            continue
        if out and out[-1]["role"] == role:
            last = out[-1]["content"]
            if isinstance(last, str) and isinstance(content, str):
                out[-1]["content"] = last + "\n\n" + content
            else:
                out[-1]["content"] = _as_blocks(last) + _as_blocks(content)
        else:
            out.append({"role": role, "content": content})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": CONTINUE_PLACEHOLDER})
    last = out[-1]
    if last["role"] == "assistant":  # a prefill may not end with whitespace
        if isinstance(last["content"], str):
            last["content"] = last["content"].rstrip()
        elif last["content"][-1].get("type") == "text":
            last["content"][-1] = {**last["content"][-1], "text": last["content"][-1]["text"].rstrip()}
    system: Content | None = None
    if system_blocks:
        marked = any("cache_control" in b for b in system_blocks)
        system = system_blocks if marked else "\n\n".join(b["text"] for b in system_blocks)
    return system, out


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    if function.get("name") == JSON_TOOL:
        raise _bad("tools", f"the tool name {JSON_TOOL!r} is reserved by the gateway")
    out: dict[str, Any] = {"name": function.get("name"), "input_schema": function.get("parameters") or _EMPTY_SCHEMA}
    if function.get("description"):
        out["description"] = function["description"]
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, str):
        return {"type": choice}  # auto, none
    return {"type": "tool", "name": (choice.get("function") or {}).get("name")}


def tool_fields(options: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's `tools` and `tool_choice` for OpenAI's tools, tool choice and response format."""
    out: dict[str, Any] = {}
    tools = [_tool(t) for t in options.get("tools") or ()]
    choice = _tool_choice(options["tool_choice"]) if "tool_choice" in options else None
    response_format = options.get("response_format") or {}
    kind = response_format.get("type")
    if kind in ("json_schema", "json_object"):
        spec = response_format.get("json_schema") or {}
        tool: dict[str, Any] = {"name": JSON_TOOL, "input_schema": spec.get("schema") or {"type": "object"}}
        tool["description"] = spec.get("description") or "Give the answer as this tool's input."
        tools.append(tool)
        choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        out["tools"] = tools
        if options.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice
    return out


def parse_blocks(blocks: list[Any]) -> tuple[str, list[CalledTool], bool]:
    """An answer's content blocks as (text, tool calls, whether the text is a JSON response format's)."""
    texts: list[str] = []
    calls: list[CalledTool] = []
    json_answer = False
    for b in blocks:
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if kind == "text" and isinstance(b.get("text"), str):
            texts.append(b["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(b.get("input") or {}).decode()
            if b.get("name") == JSON_TOOL:
                texts, json_answer = [arguments], True
                break
            calls.append(CalledTool(str(b.get("id") or ""), str(b.get("name") or ""), arguments))
    return "".join(texts), calls, json_answer
