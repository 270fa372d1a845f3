"""Session fixtures: a Redis of the tests' own, the simulator, real worker processes and the API."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devstack.stack import Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        s.start(
            workers=1,
            latency_ms=5,
            RETRY_BASE_DELAY_S="0.01",
            RETRY_MAX_DELAY_S="0.5",
            WORKER_LEASE_S="1.5",
            WORKER_POLL_FALLBACK_S="0.5",
        )
        yield s
    except BaseException:
        for proc in s.group.procs:
            print(f"----- {proc.name} -----\n{proc.log()[-4000:]}")
        raise
    finally:
        s.stop()


@pytest.fixture
def sim(stack: Stack) -> Iterator[Stack]:
    """The stack, with the simulator's faults, keys and latency reset before and after the test."""
    stack.sim("POST", "/_control/reset")
    yield stack
    stack.sim("POST", "/_control/reset")


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the session's API with a user token."""
    with stack.client(role="user") as client:
        yield client


@pytest.fixture
def admin_api(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the session's API with an admin token."""
    with stack.client(role="admin") as client:
        yield client
