"""Tenants cannot reach each other's work by id: every route addressed by a job, request or batch id
answers another tenant's id with the very 404 of an id that does not exist, route by route; the owner
still gets hers, and an admin gets everybody's. Nor each other's figures: a user's metrics count only
its own tenant's requests.

Runs on the tuned stack: its one-slot Anthropic worker, held by a `hang` fault, keeps jobs queued.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest

from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys

JOBS = "/api/v1/llm/jobs"
COMPLETIONS = "/api/v1/llm/chat/completions"
BATCHES = "/api/v1/llm/batches"
BATCH_TERMINAL = {"completed", "failed", "cancelled", "expired"}


def chat(provider: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Hello"}], "provider": provider}


def batch_lines(model: str, n: int = 2) -> bytes:
    return b"\n".join(
        orjson.dumps(
            {
                "custom_id": f"q{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": f"prompt {i}"}]},
            }
        )
        for i in range(n)
    )


class Tenants:
    """Clients of two tenants and an admin, named afresh per test so no other test's work mixes in."""

    def __init__(self, stack: Stack) -> None:
        tag = uuid.uuid4().hex[:8]
        self.alice = stack.client(sub=f"alice-{tag}")
        self.bob = stack.client(sub=f"bob-{tag}")
        self.admin = stack.client(role="admin", sub=f"ops-{tag}")

    def close(self) -> None:
        for client in (self.alice, self.bob, self.admin):
            client.close()


@pytest.fixture
def tenants(tuned_stack: Stack) -> Iterator[Tenants]:
    t = Tenants(tuned_stack)
    try:
        yield t
    finally:
        t.close()


def submit_job(client: httpx.Client, provider: str) -> str:
    resp = client.post(JOBS, json=chat(provider))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["data"]["id"])


def finished_job(client: httpx.Client, provider: str = "openai") -> str:
    job_id = submit_job(client, provider)
    view = client.get(f"{JOBS}/{job_id}", params={"wait": 20}).json()["data"]
    assert view["status"] == "succeeded", view
    return job_id


def submit_batch(client: httpx.Client, model: str) -> str:
    resp = client.post(BATCHES, content=batch_lines(model))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


def ended_batch(client: httpx.Client, model: str) -> str:
    batch_id = submit_batch(client, model)

    def ended() -> bool:
        view = client.get(f"{BATCHES}/{batch_id}", params={"wait": 5}).json()["data"]
        return view["status"] in BATCH_TERMINAL

    wait_until(ended, 60, f"batch {batch_id} to end")
    return batch_id


def fake_id(real: str) -> str:
    """An id of the same shape as `real` that nobody was given."""
    return real[:-32] + uuid.uuid4().hex


def assert_hidden(client: httpx.Client, method: str, path: str, real: str, **kwargs: Any) -> None:
    """`path` with `real` in it answers exactly as it does with an id that does not exist."""
    missing_id = fake_id(real)
    started = time.monotonic()
    got = client.request(method, path.format(real), **kwargs)
    took = time.monotonic() - started
    missing = client.request(method, path.format(missing_id), **kwargs)
    assert got.status_code == 404, (method, path, got.status_code, got.text)
    assert missing.status_code == 404, missing.text
    assert got.json() == json.loads(missing.text.replace(missing_id, real)), (got.text, missing.text)
    assert took < 2, f"{method} {path} took {took:.1f}s: it waited on another tenant's id"


def test_another_tenants_ids_answer_404_route_by_route(
    tuned: Any, tuned_stack: Stack, tenants: Tenants, redis_of: Any
) -> None:
    r = redis_of(tuned_stack)
    alice, bob, admin = tenants.alice, tenants.bob, tenants.admin
    # alice's finished work: an async job, a synchronous request, a batch (and a request of that batch)
    done = finished_job(alice)
    sync = alice.post(COMPLETIONS, json=chat("openai"))
    assert sync.status_code == 200, sync.text
    sync_id = sync.json()["data"]["id"]
    batch_done = ended_batch(alice, "gpt-4")
    first_line = orjson.loads(alice.get(f"{BATCHES}/{batch_done}/results").content.splitlines()[0])
    item_id = first_line["response"]["request_id"]
    bobs = finished_job(bob)
    # and work still going: the one Anthropic slot held, so a second job and a batch wait behind it
    tuned.fault("anthropic", mode="hang", count=1)
    running = submit_job(alice, "anthropic")
    wait_until(lambda: r.hget(keys.request(running), "status") == "running", 15, "the held job running")
    queued = submit_job(alice, "anthropic")
    batch_open = submit_batch(alice, "claude-3-haiku-20240307")

    for request_id in (done, sync_id, item_id, running, queued):
        assert_hidden(bob, "GET", JOBS + "/{}", request_id)
        # a long-poll neither waits on another tenant's job nor registers to hear of its end (alice's
        # own long-polls may have left theirs)
        watchers = r.scard(keys.watchers(request_id))
        assert_hidden(bob, "GET", JOBS + "/{}", request_id, params={"wait": 30})
        assert r.scard(keys.watchers(request_id)) == watchers
    for request_id in (done, queued, running):
        assert_hidden(bob, "DELETE", JOBS + "/{}", request_id)
    for batch_id in (batch_done, batch_open):
        assert_hidden(bob, "GET", BATCHES + "/{}", batch_id)
        assert_hidden(bob, "GET", BATCHES + "/{}", batch_id, params={"wait": 30})
        assert_hidden(bob, "GET", BATCHES + "/{}/results", batch_id)
        assert_hidden(bob, "POST", BATCHES + "/{}/cancel", batch_id)
    assert_hidden(alice, "GET", JOBS + "/{}", bobs)
    assert_hidden(alice, "DELETE", JOBS + "/{}", bobs)

    # bob changed nothing: alice's queued job and open batch are still hers to follow and cancel
    assert alice.get(f"{JOBS}/{queued}").json()["data"]["status"] == "queued"
    assert alice.get(f"{BATCHES}/{batch_open}").json()["data"]["status"] not in BATCH_TERMINAL
    for request_id in (done, sync_id, item_id):
        view = alice.get(f"{JOBS}/{request_id}", params={"wait": 5}).json()["data"]
        assert view["status"] == "succeeded" and view["result"]["content"], view
    assert alice.get(f"{BATCHES}/{batch_done}/results").status_code == 200
    assert alice.delete(f"{JOBS}/{queued}").json()["data"]["status"] == "cancelled"
    assert alice.post(f"{BATCHES}/{batch_open}/cancel").status_code == 200

    # an admin addresses every tenant's ids
    for request_id in (done, sync_id, bobs):
        assert admin.get(f"{JOBS}/{request_id}", params={"wait": 5}).json()["data"]["status"] == "succeeded"
    assert admin.get(f"{BATCHES}/{batch_done}").json()["data"]["status"] == "completed"
    assert admin.get(f"{BATCHES}/{batch_done}/results").status_code == 200
    tuned.release()
    held = admin.get(f"{JOBS}/{running}", params={"wait": 20}).json()["data"]
    assert held["status"] == "succeeded"


def metrics(client: httpx.Client, **params: str) -> dict[str, Any]:
    resp = client.get("/api/v1/llm/metrics", params={"period": "hour", **params})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


def test_a_users_metrics_count_only_its_own_tenant(tuned_stack: Stack, tenants: Tenants) -> None:
    alice, bob, admin = tenants.alice, tenants.bob, tenants.admin
    everyone_before = metrics(admin)["gateway"]
    for _ in range(2):
        assert alice.post(COMPLETIONS, json=chat("openai")).status_code == 200
    assert bob.post(COMPLETIONS, json=chat("openai")).status_code == 200
    # the workers count a request after answering it: wait for all three to land
    wait_until(lambda: metrics(admin)["gateway"]["totalRequests"] >= everyone_before["totalRequests"] + 3, 15, "3")

    mine, bobs = metrics(alice), metrics(bob, provider="openai")
    assert mine["tenant"] == subject_of(alice) and bobs["tenant"] == subject_of(bob)
    assert (mine["gateway"]["totalRequests"], mine["performance"]["totalRequests"]) == (2, 2)
    assert (bobs["gateway"]["totalRequests"], bobs["performance"]["totalRequests"]) == (1, 1)
    assert 0 < bobs["gateway"]["totalCost"] < mine["gateway"]["totalCost"]  # the same prompt twice costs more
    assert [m["count"] for m in mine["performance"]["topModels"]] == [2]
    # an admin sees every tenant's, or one tenant's as its user does
    everyone = metrics(admin)
    assert everyone["tenant"] is None
    assert everyone["gateway"]["totalRequests"] >= everyone_before["totalRequests"] + 3
    assert {**metrics(admin, tenant=mine["tenant"])["gateway"], "uptime": 0} == {**mine["gateway"], "uptime": 0}
    # a user cannot ask for another tenant's
    refused = alice.get("/api/v1/llm/metrics", params={"tenant": bobs["tenant"]})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"


def subject_of(client: httpx.Client) -> str:
    """The subject of a client's token (its tenant)."""
    token = client.headers["authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])
