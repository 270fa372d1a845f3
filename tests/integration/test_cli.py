"""The `gateway` command line against a running stack, as a batch script would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from devstack.stack import Stack

GATEWAY = str(Path(sys.executable).with_name("gateway"))


def gateway(
    stack: Stack, *args: str, token: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GATEWAY_URL": stack.api_url,
        "GATEWAY_TOKEN": token if token is not None else stack.token(sub="cli-user"),
    }
    return subprocess.run([GATEWAY, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_batch_submit_wait_output(sim: Stack, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(
        b"\n".join(
            orjson.dumps(
                {
                    "custom_id": f"p{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4", "messages": [{"role": "user", "content": f"Q{i}"}], "max_tokens": 8},
                }
            )
            for i in range(120)
        )
        + b"\n"
    )
    out = tmp_path / "results.jsonl"

    run = gateway(sim, "batch", "submit", str(prompts), "--wait", "--output", str(out))

    assert run.returncode == 0, run.stderr
    batch_id = run.stdout.strip()
    assert batch_id.startswith("batch_")
    assert "completed: 120 completed, 0 failed of 120" in run.stderr
    assert "req" in run.stderr  # the progress bar
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"p{i}" for i in range(120))
    assert all(line["response"]["status_code"] == 200 for line in lines)

    # following an ended batch by id prints the same summary and can download again
    again = tmp_path / "again.jsonl"
    follow = gateway(sim, "batch", "follow", batch_id, "-o", str(again), "--quiet")
    assert follow.returncode == 0, follow.stderr
    assert sorted(again.read_bytes().splitlines()) == sorted(out.read_bytes().splitlines())


def test_complete_and_jobs(sim: Stack) -> None:
    run = gateway(sim, "complete", "Say hello", "--model", "gpt-4", "--max-tokens", "12")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()
    assert "openai gpt-4" in run.stderr

    with sim.client(sub="cli-user") as api:
        job = api.post("/api/v1/llm/jobs", json={"messages": [{"role": "user", "content": "hi"}]}).json()["data"]
    run = gateway(sim, "jobs", job["id"], "--wait", "20")
    assert run.returncode == 0, run.stderr
    assert orjson.loads(run.stdout)["status"] == "succeeded"


def test_errors_are_messages_not_tracebacks(sim: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "body": {"model": "gpt-4", "messages": []}}\n')
    cases = [
        (gateway(sim, "batch", "submit", str(bad)), "line 1"),
        (gateway(sim, "batch", "submit", str(tmp_path / "missing.jsonl")), "no such file"),
        (gateway(sim, "complete", "hi", token="not-a-jwt"), "HTTP 401"),
        (gateway(sim, "batch", "follow", "batch_" + "0" * 32), "HTTP 404"),
    ]
    for run, expected in cases:
        assert run.returncode == 1
        assert expected in run.stderr
        assert "Traceback" not in run.stderr
