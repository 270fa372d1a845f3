"""Anthropic's Messages features beyond text, as the simulator checks and answers them: content blocks in
Anthropic's own shapes (`image` with a `base64` or `url` source, `tool_use`, `tool_result`,
`cache_control`), `tools` and `tool_choice`. Errors read as Anthropic's do (`<location>: <message>`)."""

from __future__ import annotations

import base64
import binascii
import json
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.schema_sample import sample
from simulator.tokens import count_tokens

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
IMAGE_TOKENS = 85  # counted like OpenAI's low detail, so both providers agree on a prompt's size
_BLOCK_TAGS = "'text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking'"
_CACHE_TYPES = ("ephemeral",)


@dataclass
class Read:
    """What a message's content came to: its text, images, and the tool uses and results it holds."""

    text: str = ""
    images: int = 0
    uses: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.text and not self.images and not self.uses and not self.results


def _image_problem(source: Any, where: str) -> str | None:
    if not isinstance(source, dict):
        return f"{where}.source: Field required"
    kind = source.get("type")
    if kind == "url":
        return None if isinstance(source.get("url"), str) else f"{where}.source.url: Field required"
    if kind != "base64":
        tags = "'base64', 'url'"
        return f"{where}.source: Input tag '{kind}' found using 'type' does not match any of the expected tags: {tags}"
    if source.get("media_type") not in IMAGE_TYPES:
        return (
            f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        )
    try:
        base64.b64decode(str(source.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        return f"{where}.source.base64.data: invalid base64 data"
    return None


def _cache_problem(block: dict[str, Any], where: str) -> str | None:
    mark = block.get("cache_control")
    if mark is None or (isinstance(mark, dict) and mark.get("type") in _CACHE_TYPES):
        return None
    return f"{where}.cache_control: Input tag found using 'type' does not match any of the expected tags: 'ephemeral'"


def read_content(content: Any, where: str, role: str) -> Read | str:
    """A message's content read block by block, or the 400's message."""
    if isinstance(content, str):
        return Read(text=content)
    if not isinstance(content, list):
        return f"{where}: Input should be a valid list"
    out = Read()
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        if not isinstance(block, dict):
            return f"{at}: Input should be a valid dictionary or object to extract fields from"
        kind = block.get("type")
        problem = _cache_problem(block, at)
        if problem is not None:
            return problem
        if kind == "text":
            if not isinstance(block.get("text"), str):
                return f"{at}.text: Field required"
            if not block["text"]:
                return f"{at}.text: text content blocks must be non-empty"
            out.text += block["text"]
        elif kind == "image":
            problem = _image_problem(block.get("source"), f"{at}.image")
            if problem is not None:
                return problem
            out.images += 1
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                return f"{at}.tool_use.id: Field required"
            if not isinstance(block.get("input"), dict):
                return f"{at}.tool_use.input: Input should be a valid dictionary"
            out.uses.append(block["id"])
            out.text += json.dumps(block["input"])
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                return f"{at}.tool_result.tool_use_id: Field required"
            inner = read_content(block.get("content", ""), f"{at}.tool_result.content", "user")
            if isinstance(inner, str):
                return inner
            out.results.append(block["tool_use_id"])
            out.text += inner.text
        else:
            return f"{at}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {_BLOCK_TAGS}"
    return out


def pairing_problem(reads: list[Read]) -> str | None:
    """Each `tool_use` answered by a `tool_result` in the very next message, and no result without one."""
    for i, read in enumerate(reads):
        asked = reads[i - 1].uses if i > 0 else []
        stray = [r for r in read.results if r not in asked]
        if stray:
            return (
                f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: {stray[0]}. Each"
                " `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        if read.uses:
            answered = reads[i + 1].results if i + 1 < len(reads) else None
            missing = [u for u in read.uses if answered is not None and u not in answered]
            if missing:
                return (
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after:"
                    f" {', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in"
                    " the next message."
                )
    return None


def tools_problem(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for k, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return f"tools.{k}.custom.name: Field required"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                return f"tools.{k}.custom.input_schema: Field required"
            if schema.get("type") != "object":
                return f"tools.{k}.custom.input_schema.type: Input should be 'object'"
            problem = _cache_problem(tool, f"tools.{k}.custom")
            if problem is not None:
                return problem
            names.append(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            return (
                f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected tags:"
                " 'auto', 'any', 'tool', 'none'"
            )
        if kind == "tool" and choice.get("name") not in names:
            return f"tool_choice.tool.name: Tool '{choice.get('name')}' not found in the provided tools"
    return None


def _tool_to_use(body: dict[str, Any], answered: bool) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none" or (choice["type"] == "auto" and answered):
        return None
    if choice["type"] == "tool":
        named: dict[str, Any] = next(t for t in tools if t["name"] == choice["name"])
        return named
    first: dict[str, Any] = tools[0]
    return first


def answer(
    body: dict[str, Any], text: str, reason: str, last: Read, rng: random.Random
) -> tuple[list[dict[str, Any]], str, int]:
    """The answer's (content blocks, stop reason, output tokens) for the plain reply `text`: a tool use,
    or the reply to a tool's result."""
    answered = bool(last.results)
    tool = _tool_to_use(body, answered)
    if tool is not None:
        arguments = sample(tool["input_schema"])
        block = {
            "type": "tool_use",
            "id": f"toolu_01{rng.getrandbits(88):022x}",
            "name": tool["name"],
            "input": arguments,
        }
        return [block], "tool_use", count_tokens(tool["name"] + json.dumps(arguments))
    if answered:
        text, reason = f"Simulated anthropic answer from the tool result: {last.text[:60]}", "end_turn"
    return [{"type": "text", "text": text}], reason, count_tokens(text)
