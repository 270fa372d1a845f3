"""The README tells the truth: its configuration table is the settings class, its examples run."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import Stack
from scripts.config_table import table
from shared.settings import get_settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_configuration_table_matches_the_settings() -> None:
    generated = re.search(r"<!-- config:start -->\n(.*?)\n<!-- config:end -->", README, flags=re.S)
    assert generated is not None
    assert generated.group(1) == table(), "regenerate it: python scripts/config_table.py"


CURL_EXAMPLES = _blocks(_section("API examples"), "bash")


@pytest.mark.parametrize("script", CURL_EXAMPLES, ids=[f"example-{i}" for i in range(len(CURL_EXAMPLES))])
def test_shell_example_runs(stack: Stack, script: str) -> None:
    env = {
        **os.environ,
        "GATEWAY_URL": stack.api_url,
        "GATEWAY_TOKEN": stack.token(role="user", sub="alice"),
        "ADMIN_TOKEN": stack.token(role="admin", sub="ops"),
    }
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=90
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.stdout.strip()
    for line in run.stdout.splitlines():
        if line.startswith('{"success"'):
            assert line.startswith('{"success":true'), line


def test_openai_sdk_example_runs(stack: Stack) -> None:
    (code,) = [b for b in _blocks(_section("API examples"), "python") if "from openai import OpenAI" in b]
    code = code.replace("http://127.0.0.1:8000", stack.api_url)
    namespace: dict[str, Any] = {"GATEWAY_TOKEN": stack.token(role="user", sub="alice"), "print": lambda *a: None}
    exec(compile(code, "README", "exec"), namespace)
    assert namespace["reply"].choices[0].message.content
    assert namespace["streamed"]  # the streamed answer, assembled from its chunks


# what each example of the section leaves behind, and what a user would check of it
CAPABILITY_RESULTS: dict[str, Any] = {
    "answer": lambda v: '"celsius": 14' in v.choices[0].message.content,
    "seen": lambda v: v.choices[0].message.content.startswith("Simulated anthropic reply"),
    "event": lambda v: v.name and v.date,
    "message": lambda v: v.content[0].text and v.usage.input_tokens > 0,
    "vectors": lambda v: len(v.data) == 2 and len(v.data[0].embedding) == 1536,
}
CAPABILITY_EXAMPLES = _blocks(_section("Tools, images, JSON output, embeddings and Anthropic's SDK"), "python")


@pytest.mark.parametrize("code", CAPABILITY_EXAMPLES, ids=[f"capability-{i}" for i in range(len(CAPABILITY_EXAMPLES))])
def test_capability_example_runs(stack: Stack, code: str) -> None:
    code = code.replace("http://127.0.0.1:8000", stack.api_url)
    namespace: dict[str, Any] = {"GATEWAY_TOKEN": stack.token(role="user", sub="alice"), "print": lambda *a: None}
    exec(compile(code, "README", "exec"), namespace)
    (name,) = [n for n in CAPABILITY_RESULTS if n in namespace]
    assert CAPABILITY_RESULTS[name](namespace[name]), name


def test_programmatic_example_runs(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = [b for b in _blocks(_section("API examples"), "python") if "create_gateway" in b]
    monkeypatch.setenv("REDIS_URL", stack.redis_url)
    monkeypatch.setenv("OPENAI_BASE_URL", stack.env["OPENAI_BASE_URL"])
    monkeypatch.setenv("ANTHROPIC_BASE_URL", stack.env["ANTHROPIC_BASE_URL"])
    get_settings.cache_clear()
    namespace: dict[str, Any] = {
        "OPENAI_API_KEY": "sk-readme-example-openai",
        "ANTHROPIC_API_KEY": "sk-ant-readme-example",
        "print": lambda *a: None,
    }
    compiled = compile(code, "README", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    try:
        asyncio.run(_run(compiled, namespace))
    finally:
        get_settings.cache_clear()
    assert namespace["response"].content
    assert namespace["response"].cost.total_cost > 0


async def _run(compiled: Any, namespace: dict[str, Any]) -> None:
    result = eval(compiled, namespace)
    if asyncio.iscoroutine(result):
        await result
