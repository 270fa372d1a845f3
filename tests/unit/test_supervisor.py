"""The supervisor restarts dead children with a growing backoff, stops on SIGTERM without restarting,
and gives up at once when a first child cannot start at all."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess
from typing import Any

from api.supervisor import STARTUP_FAILURE, Supervisor

ctx = multiprocessing.get_context("fork")


def exit_with(code: int) -> None:
    os._exit(code)


def sleep_forever() -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(1)


def test_a_crashing_child_is_restarted_with_a_growing_backoff_until_sigterm() -> None:
    starts: list[float] = []
    survivors: list[BaseProcess] = []

    def start(slot: int) -> BaseProcess:
        starts.append(time.monotonic())
        if slot == 1:  # slot 1 stays up, and must be stopped by the SIGTERM passed on
            child = ctx.Process(target=sleep_forever)
            survivors.append(child)
        else:
            child = ctx.Process(target=exit_with, args=(1,))
        child.start()
        if len(starts) == 5:  # slot 0 started 4 times: enough
            os.kill(os.getpid(), signal.SIGTERM)
        return child

    before = signal.getsignal(signal.SIGTERM)
    sup = Supervisor(start, 2, backoff_first_s=0.02, backoff_max_s=1.0, stable_after_s=60)
    assert sup.backoff(1) == 0.02 and sup.backoff(3) == 0.08 and sup.backoff(20) == 1.0
    assert sup.run() == 0
    restarts = starts[2:]  # slot 0's after the first two starts
    gaps = [b - a for a, b in itertools.pairwise(restarts)]
    assert len(starts) == 5
    assert gaps[0] >= sup.backoff(2) and gaps[1] >= sup.backoff(3)
    assert [c.exitcode for c in survivors] == [0]  # stopped by the SIGTERM, not restarted
    assert signal.getsignal(signal.SIGTERM) is before  # the parent's own handling is back


def test_a_first_child_that_cannot_start_stops_everything() -> None:
    starts: list[int] = []

    def start(slot: int) -> BaseProcess:
        starts.append(slot)
        child = (
            ctx.Process(target=exit_with, args=(STARTUP_FAILURE,)) if slot == 0 else ctx.Process(target=sleep_forever)
        )
        child.start()
        return child

    assert Supervisor(start, 2, backoff_first_s=0.01).run() == STARTUP_FAILURE
    assert starts == [0, 1]  # nothing started again


def exit_on_hangup(ready: Any) -> None:
    signal.signal(signal.SIGHUP, lambda *_: os._exit(7))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ready.set()
    while True:
        time.sleep(1)


def test_sighup_is_passed_on_to_the_children() -> None:
    children: list[BaseProcess] = []

    def start(slot: int) -> BaseProcess:
        ready = ctx.Event()
        child = ctx.Process(target=exit_on_hangup, args=(ready,))
        child.start()
        assert ready.wait(10)
        children.append(child)
        # the first child gets a hangup through the parent; its replacement ends the test
        os.kill(os.getpid(), signal.SIGHUP if len(children) == 1 else signal.SIGTERM)
        return child

    assert Supervisor(start, 1, backoff_first_s=0.01).run() == 0
    assert [c.exitcode for c in children] == [7, 0]
