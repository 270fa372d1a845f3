"""The simulator under test: a `python -m simulator` subprocess per module, and the helpers its tests share."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-test-simulator-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-simulator-0123456789"
OA_HEADERS = {"Authorization": f"Bearer {OPENAI_KEY}"}
AN_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
CHAT = "/openai/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"
SIM_ARGS = ("--latency-ms", "0", "--seed", "1234")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("simulator") / "simulator.log"
    log = log_path.open("wb")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port), *SIM_ARGS],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                if httpx.get(f"{url}/_control/stats", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("simulator did not come up")
            try:  # wait on the process itself: returns at once if it died
                proc.wait(timeout=0.05)
                pytest.fail(f"simulator exited with {proc.returncode}: {log_path.read_text()}")
            except subprocess.TimeoutExpired:
                pass
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        r = c.post("/_control/reset")
        assert r.status_code == 200
        yield c


def add_fault(client: httpx.Client, **rule: Any) -> str:
    r = client.post("/_control/faults", json=rule)
    assert r.status_code == 200, r.text
    rule_id: str = r.json()["id"]
    return rule_id


def stats(client: httpx.Client) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_control/stats").json()
    return data


def oa_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello there"},
        ],
    }
    body.update(extra)
    return body


def an_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-3-opus-20240229",
        "max_tokens": 1024,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    body.update(extra)
    return body
