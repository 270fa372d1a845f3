"""Batches end to end: one result line per request whatever fails, cancel, expiry, refused uploads,
fair sharing between tenants and with synchronous traffic, and a worker killed mid-batch.

These tests inject provider faults and hold calls, so they run on a stack of their own.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys
from tests.integration.conftest import Upstream, dump_logs, start_stack

BATCHES = "/api/v1/llm/batches"
TERMINAL = {"completed", "failed", "cancelled", "expired"}
CHAT = {"messages": [{"role": "user", "content": "Hello"}], "model": "gpt-4"}


@pytest.fixture(scope="module")
def bstack() -> Iterator[Stack]:
    s = start_stack({"openai": [{}], "anthropic": [{}]})
    try:
        yield s
    except BaseException:
        dump_logs(s)
        raise
    finally:
        s.stop()


@pytest.fixture
def up(bstack: Stack) -> Iterator[Upstream]:
    u = Upstream(bstack)
    u.reset()
    yield u
    u.reset()


@pytest.fixture
def client(bstack: Stack) -> Iterator[httpx.Client]:
    with bstack.client(sub="batch-tester", timeout=60) as c:
        yield c


def openai_lines(n: int, model: str = "gpt-4", prefix: str = "req") -> bytes:
    return b"\n".join(
        orjson.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": f"prompt {i}"}], "max_tokens": 16},
            }
        )
        for i in range(n)
    )


def submit(client: httpx.Client, content: bytes, **params: str) -> dict[str, Any]:
    resp = client.post(BATCHES, content=content, params=params)
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


def status(client: httpx.Client, batch_id: str, wait: float = 0) -> dict[str, Any]:
    resp = client.get(f"{BATCHES}/{batch_id}", params={"wait": wait} if wait else None)
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()["data"]
    return data


def wait_end(client: httpx.Client, batch_id: str, timeout: float = 90) -> dict[str, Any]:
    """Long-poll until the batch ends (each poll returns as soon as it does)."""
    last: dict[str, Any] = {}

    def ended() -> bool:
        last.update(status(client, batch_id, wait=5))
        return last["status"] in TERMINAL

    wait_until(ended, timeout, f"batch {batch_id} to end")
    return last


def results(client: httpx.Client, batch_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"{BATCHES}/{batch_id}/results")
    resp.raise_for_status()
    return [orjson.loads(line) for line in resp.content.splitlines() if line]


def assert_one_line_each(lines: list[dict[str, Any]], expected_ids: set[str]) -> None:
    seen = Counter(line["custom_id"] for line in lines)
    assert set(seen) == expected_ids
    assert max(seen.values()) == 1, [cid for cid, n in seen.items() if n > 1][:5]
    for line in lines:
        assert (line["response"] is None) != (line["error"] is None), line


def test_2000_requests_with_injected_failures_end_in_exactly_2000_lines(client: httpx.Client, up: Upstream) -> None:
    up.fault("openai", mode="status", status=500, probability=0.2)  # retried, then failed over
    up.fault("openai", mode="status", status=400, probability=0.03)  # not retryable: a failed line
    up.fault("anthropic", mode="status", status=503, probability=0.1)
    batch = submit(client, openai_lines(2000))
    assert batch["status"] == "in_progress"
    assert batch["requestCounts"] == {"total": 2000, "completed": 0, "failed": 0}

    done = wait_end(client, batch["id"], timeout=180)
    lines = results(client, batch["id"])

    assert done["status"] == "completed"
    assert len(lines) == 2000
    assert_one_line_each(lines, {f"req-{i}" for i in range(2000)})
    ok = [line for line in lines if line["error"] is None and line["response"]["status_code"] == 200]
    failed = [line for line in lines if line not in ok]
    assert done["requestCounts"] == {"total": 2000, "completed": len(ok), "failed": len(failed)}
    assert ok and failed
    # OpenAI's Batch output format: a chat.completion body, or the provider's refusal as an error response
    assert ok[0]["response"]["body"]["object"] == "chat.completion"
    assert ok[0]["response"]["body"]["choices"][0]["message"]["content"]
    assert failed[0]["response"]["status_code"] == 400
    assert failed[0]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert done["cost"]["totalCost"] > 0


def test_cancel_mid_run_ends_every_request_once(client: httpx.Client, up: Upstream) -> None:
    up.stack.sim("POST", "/_control/latency", json={"ms": 40}).raise_for_status()
    batch = submit(client, openai_lines(1500, prefix="c"))
    wait_until(lambda: status(client, batch["id"])["requestCounts"]["completed"] >= 20, 30, "some requests done")

    resp = client.post(f"{BATCHES}/{batch['id']}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["status"] in ("cancelling", "cancelled")
    done = wait_end(client, batch["id"])
    lines = results(client, batch["id"])

    assert done["status"] == "cancelled"
    assert_one_line_each(lines, {f"c-{i}" for i in range(1500)})
    cancelled = [line for line in lines if line["error"] and line["error"]["code"] == "batch_cancelled"]
    succeeded = [line for line in lines if line["response"] and line["response"]["status_code"] == 200]
    assert cancelled and succeeded
    assert len(cancelled) + len(succeeded) == 1500
    counts = done["requestCounts"]
    assert counts["completed"] == len(succeeded) and counts["failed"] == len(cancelled)
    # a second cancel is refused: the batch has ended
    assert client.post(f"{BATCHES}/{batch['id']}/cancel").status_code == 409


def test_expiry_ends_unstarted_requests_with_an_expired_line(client: httpx.Client, up: Upstream) -> None:
    up.fault("openai", mode="hang")  # the first calls hold, the rest of the batch waits behind the bound
    batch = submit(client, openai_lines(400, prefix="e"), completionWindow="2s")
    wait_until(lambda: status(client, batch["id"])["status"] == "finalizing", 30, "the window to pass")
    up.release()  # the held calls now finish normally
    done = wait_end(client, batch["id"])
    lines = results(client, batch["id"])

    assert done["status"] == "expired"
    assert done["expiredAt"] is not None
    assert_one_line_each(lines, {f"e-{i}" for i in range(400)})
    expired = [line for line in lines if line["error"] and line["error"]["code"] == "batch_expired"]
    assert expired and len(expired) < 400
    assert done["requestCounts"]["failed"] == len(expired)
    assert done["requestCounts"]["completed"] == 400 - len(expired)


def test_malformed_lines_refuse_the_whole_batch_naming_the_lines(client: httpx.Client, up: Upstream) -> None:
    before = client.get(BATCHES).json()["data"]
    good = orjson.loads(openai_lines(1))
    upload = b"\n".join(
        [
            orjson.dumps({**good, "custom_id": "a"}),
            orjson.dumps({**good, "custom_id": "b"}),
            b'{"custom_id": "c", "body": ',  # line 3: not JSON
            orjson.dumps({**good, "custom_id": "d"}),
            orjson.dumps({"custom_id": "e", "body": {"model": "gpt-4", "messages": []}}),  # line 5: no messages
            b"",
            orjson.dumps({**good, "custom_id": "a"}),  # line 7: a custom_id used twice
        ]
    )
    resp = client.post(BATCHES, content=upload)

    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "line 3" in error["message"] and "nothing was enqueued" in error["message"]
    assert [e["line"] for e in error["errors"]] == [3, 5, 7]
    assert "used twice" in error["errors"][2]["message"]
    assert client.get(BATCHES).json()["data"] == before
    assert up.calls("openai") == 0

    arr = orjson.dumps([{"customId": "x", "messages": [{"role": "user", "content": "hi"}]}, {"customId": "y"}])
    resp = client.post(BATCHES, content=arr)
    assert resp.status_code == 400 and resp.json()["error"]["errors"][0]["line"] == 2
    assert "item 2" in resp.json()["error"]["message"]
    assert client.post(BATCHES, content=b"  \n").status_code == 400
    resp = client.post(BATCHES, content=openai_lines(2), params={"completionWindow": "soon"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "completionWindow"


def test_json_array_batch_answers_in_the_gateway_shape(client: httpx.Client, up: Upstream) -> None:
    items = [
        {"customId": "hello", "messages": [{"role": "user", "content": "Hello"}], "maxTokens": 8},
        {"customId": "claude", "model": "claude-3-haiku-20240307", "messages": [{"role": "user", "content": "Hi"}]},
    ]
    batch = submit(client, orjson.dumps(items, option=orjson.OPT_INDENT_2), metadata='{"job": "nightly"}')
    assert batch["format"] == "gateway" and batch["metadata"] == {"job": "nightly"}
    assert batch["completionWindow"] == "24h"
    done = wait_end(client, batch["id"])
    lines = {line["custom_id"]: line for line in results(client, batch["id"])}

    assert done["status"] == "completed" and done["requestCounts"]["completed"] == 2
    assert lines["claude"]["response"]["body"]["provider"] == "anthropic"
    assert lines["hello"]["response"]["body"]["content"]
    assert done["cost"]["totalCost"] == pytest.approx(
        sum(line["response"]["body"]["cost"]["totalCost"] for line in lines.values())
    )


def test_another_tenants_batch_is_not_stuck_behind_a_big_one(bstack: Stack, up: Upstream) -> None:
    up.stack.sim("POST", "/_control/latency", json={"ms": 30}).raise_for_status()
    with bstack.client(sub="tenant-big") as big, bstack.client(sub="tenant-small") as small:
        first = submit(big, openai_lines(3000, prefix="big"))
        second = submit(small, openai_lines(100, prefix="small"))
        assert small.get(f"{BATCHES}/{first['id']}").status_code == 404  # not theirs

        done = wait_end(small, second["id"])
        big_now = status(big, first["id"])
        # round-robin by tenant: the small batch ended while the big one, submitted first, still runs
        assert done["status"] == "completed"
        assert big_now["status"] == "in_progress"
        assert big_now["requestCounts"]["completed"] < 3000
        big.post(f"{BATCHES}/{first['id']}/cancel").raise_for_status()
        assert wait_end(big, first["id"])["status"] == "cancelled"


def test_synchronous_requests_go_ahead_of_a_running_batch(bstack: Stack, client: httpx.Client, up: Upstream) -> None:
    up.stack.sim("POST", "/_control/latency", json={"ms": 30}).raise_for_status()
    batch = submit(client, openai_lines(3000, prefix="bulk"))
    wait_until(lambda: status(client, batch["id"])["requestCounts"]["completed"] > 0, 30, "the batch to start")

    for _ in range(3):
        resp = client.post("/api/v1/llm/chat/completions", json={"messages": [{"role": "user", "content": "now"}]})
        assert resp.status_code == 200, resp.text
    during = status(client, batch["id"])
    assert during["status"] == "in_progress" and during["requestCounts"]["completed"] < 3000
    client.post(f"{BATCHES}/{batch['id']}/cancel").raise_for_status()
    wait_end(client, batch["id"])


def test_a_worker_killed_mid_batch_loses_nothing() -> None:
    s = start_stack({"openai": [{}, {}], "anthropic": [{}]})
    try:
        s.sim("POST", "/_control/latency", json={"ms": 40}).raise_for_status()
        with s.client(timeout=60) as client:
            batch = submit(client, openai_lines(800, prefix="k"))
            wait_until(lambda: status(client, batch["id"])["requestCounts"]["completed"] >= 50, 30, "progress")
            s.workers["openai"][0].kill()  # SIGKILL: its claimed jobs are retaken once their lease lapses
            done = wait_end(client, batch["id"], timeout=120)
            lines = results(client, batch["id"])
        assert done["status"] == "completed"
        assert_one_line_each(lines, {f"k-{i}" for i in range(800)})
        assert done["requestCounts"] == {"total": 800, "completed": 800, "failed": 0}
    except BaseException:
        dump_logs(s)
        raise
    finally:
        s.stop()


def test_a_batch_pool_takes_the_batch_and_leaves_the_interactive_pool_to_callers() -> None:
    """WORKER_JOB_KINDS splits a provider's workers: batch items run only on the batch-only worker, at a
    lower CPU priority; synchronous requests run only on the interactive one."""
    s = start_stack({"openai": [{"WORKER_JOB_KINDS": "interactive"}, {"WORKER_JOB_KINDS": "batch"}], "anthropic": [{}]})
    try:
        interactive, batch_only = s.workers["openai"]
        assert batch_only.popen.pid is not None and interactive.popen.pid is not None
        assert os.getpriority(os.PRIO_PROCESS, batch_only.popen.pid) == 10  # WORKER_BATCH_NICE's default
        assert os.getpriority(os.PRIO_PROCESS, interactive.popen.pid) == os.getpriority(os.PRIO_PROCESS, 0)
        r = redis.Redis.from_url(s.redis_url, decode_responses=True)
        with s.client(sub="batch-tester", timeout=60) as c:
            batch = submit(c, openai_lines(60))
            synced = [c.post("/api/v1/llm/chat/completions", json={**CHAT, "provider": "openai"}) for _ in range(5)]
            assert wait_end(c, batch["id"])["status"] == "completed"
            lines = results(c, batch["id"])

        def ran_on(request_id: str) -> int:
            return int(r.hget(keys.request(request_id), "worker").split(":")[2])  # type: ignore[union-attr]

        assert len(lines) == 60 and {ran_on(line["response"]["request_id"]) for line in lines} == {batch_only.popen.pid}
        assert all(resp.status_code == 200 for resp in synced)
        assert {ran_on(resp.json()["data"]["id"]) for resp in synced} == {interactive.popen.pid}
        r.close()
    except BaseException:
        dump_logs(s)
        raise
    finally:
        s.stop()
