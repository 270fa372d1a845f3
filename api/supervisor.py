"""Keeps N server processes running: a child that dies is started again, after a backoff if it keeps dying.

The parent only supervises: it starts the children, waits for one to exit (or for a signal) without
polling, and starts a dead child's replacement after `backoff_first_s`, doubling up to `backoff_max_s`
while replacements keep dying within `stable_after_s` of their start (a child that stayed up that long
resets its slot's backoff). SIGTERM and SIGINT stop it: they are passed on to the children as SIGTERM,
nothing is restarted any more, and the parent exits once every child has. SIGHUP is passed on (the
children reload their keys).

A child of the first generation that exits with `STARTUP_FAILURE` or `EX_CONFIG` could not start at
all (a bad setting, say): starting it again would fail the same way, so the parent stops the others and
exits with that status. After a stop that was asked for, the parent's status is 0.

Third-party internals touched: none (multiprocessing's public `Process`, `sentinel` and `connection.wait`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import structlog

_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STARTUP_FAILURE = 3  # uvicorn's own exit status for a server that could not start
EX_CONFIG = 78  # sysexits.h: the configuration is wrong (a short JWT secret, say)
_CANNOT_START = frozenset({STARTUP_FAILURE, EX_CONFIG})

log = structlog.get_logger(__name__)


@dataclass
class _Slot:
    index: int
    child: BaseProcess | None = None
    started_at: float = 0.0
    quick_deaths: int = 0  # deaths in a row within `stable_after_s` of their start
    restart_at: float | None = None  # when the dead child's replacement is due
    first_generation: bool = True


class Supervisor:
    def __init__(
        self,
        start: Callable[[int], BaseProcess],
        count: int,
        *,
        backoff_first_s: float = 0.1,
        backoff_max_s: float = 10.0,
        stable_after_s: float = 10.0,
    ) -> None:
        """`start(i)` starts the process of slot i by forking (multiprocessing's "fork" context) and
        returns it, started. Signals are blocked while it runs, and unblocked in the child once the
        child has the signal handling the parent had before supervising: a spawned child would inherit
        the blocked signals and never get a SIGTERM."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self._start = start
        self._slots = [_Slot(i) for i in range(count)]
        self._backoff_first_s = backoff_first_s
        self._backoff_max_s = backoff_max_s
        self._stable_after_s = stable_after_s
        self._stopping = False
        self._exit_status = 0
        self._signals: list[int] = []  # received, not yet acted on (the handler only records them)
        self._wake: tuple[int, int] | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._forking_mask: set[int | signal.Signals] | None = None  # the mask to restore, while `start` runs
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def backoff(self, quick_deaths: int) -> float:
        """The wait before restarting a slot whose children died `quick_deaths` times in a row."""
        return float(min(self._backoff_first_s * 2 ** max(quick_deaths - 1, 0), self._backoff_max_s))

    def run(self) -> int:
        """Supervises until stopped by a signal; returns the exit status for the parent."""
        wake_r, wake_w = self._wake = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous_wakeup = signal.set_wakeup_fd(wake_w)  # a signal makes the wait below return
        previous = self._previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        try:
            for slot in self._slots:
                self._launch(slot)
            while self._stopping is False or self._alive():
                sentinels = [s.child.sentinel for s in self._slots if s.child is not None]
                wait([*sentinels, wake_r], timeout=self._next_restart_in())
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                self._act_on_signals()
                self._reap()
                self._restart_due()
            return self._exit_status
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            self._wake = None

    def _after_fork_in_child(self) -> None:
        """A child forked by `start` gets the signal handling the parent had before supervising, and none
        of its pipe. The signals were blocked across the fork: one that arrived meanwhile is delivered
        now, to that handling (with the parent's handler it would wait in a list no one reads)."""
        mask = self._forking_mask
        if mask is None:  # a fork that is not one of our children's
            return
        signal.set_wakeup_fd(-1)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def stop(self) -> None:
        """Stops supervising: children get SIGTERM, none is restarted; `run` returns once all have exited."""
        self._stopping = True
        for slot in self._slots:
            slot.restart_at = None
        self._signal_children(signal.SIGTERM)

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        # acted on by the loop, not here: a handler runs between any two bytecodes, halfway through
        # starting a child for instance, and that child would miss the SIGTERM
        self._signals.append(signum)

    def _act_on_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                self._signal_children(signal.SIGHUP)  # reload keys in every process
            else:
                log.info("api_stopping", signal=signal.Signals(signum).name)
                self.stop()

    def _signal_children(self, sig: int) -> None:
        for slot in self._slots:
            child = slot.child
            if child is not None and child.pid is not None and child.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)

    def _alive(self) -> bool:
        return any(s.child is not None for s in self._slots)

    def _launch(self, slot: _Slot) -> None:
        slot.restart_at = None
        mask = self._forking_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            slot.child = self._start(slot.index)
        finally:
            self._forking_mask = None
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # what came meanwhile is handled now
        slot.started_at = time.monotonic()
        log.info("api_process_started", slot=slot.index, pid=slot.child.pid, quick_deaths=slot.quick_deaths)

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            child = slot.child
            if child is None or child.exitcode is None:
                continue
            child.join()
            slot.child = None
            code = child.exitcode
            uptime = now - slot.started_at
            if self._stopping:  # asked for: the parent's status stays 0 (or the start-up failure's)
                if code != 0:
                    log.info("api_process_stopped", slot=slot.index, pid=child.pid, exitcode=code)
                continue
            if slot.first_generation and code in _CANNOT_START:
                log.error("api_process_failed_to_start", slot=slot.index, pid=child.pid, exitcode=code)
                self._exit_status = code
                self.stop()
                continue
            slot.first_generation = False
            slot.quick_deaths = 1 if uptime >= self._stable_after_s else slot.quick_deaths + 1
            delay = self.backoff(slot.quick_deaths)
            slot.restart_at = now + delay
            log.warning(
                "api_process_died",
                slot=slot.index,
                pid=child.pid,
                exitcode=code,
                signal=_signal_name(-code) if code < 0 else None,
                uptime_s=round(uptime, 3),
                restart_in_s=delay,
            )

    def _restart_due(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._launch(slot)

    def _next_restart_in(self) -> float | None:
        due = [s.restart_at for s in self._slots if s.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal has no name
        return str(signum)
