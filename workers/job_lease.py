"""A running job's lease, as its worker knows it, and the fencing check before each provider call.

A worker holds a job by its lease (arq's in-progress key) and by the request record naming it
(shared/lua/lib/holder.lua). A worker that is paused (SIGSTOP, a stalled host, a long GC) past its
lease loses the job to another worker; when it wakes, its own timers tell it nothing, so before each
provider call, retry and failover hop (`check_lease`, which the processor calls) it asks whether it
still holds the job, and gives the job up (`LeaseLost`) if not: the provider is not called again,
the other worker's outcome stands.

Asking Redis before every call would add a round trip to every request, so the check is local while
it can be: every claim, take and heartbeat that confirmed the lease moves `held_until` to the time
its request was sent plus a safe share of the lease (Redis set the lease's end no earlier than
that). Only a job whose last confirmation is older, which is what a paused worker's job is when it
wakes, costs a round trip (the fenced renewal of that one job). A handed-over job not yet taken can
also be taken back from a worker that does not take it in time (`WORKER_HANDOVER_TAKE_S`), so until
its take it is held only for a share of that bound from its hand-over.

What the check cannot prevent: a call already under way when the worker was paused was sent, and
the job's new holder sends it again (see the README's upstream semantics). The finish script refuses
that call's outcome (fenced), so the request still ends exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from shared.queue import now_ms

# the share of a lease (or of the hand-over take bound) a confirmation is trusted for without asking
# Redis: the rest is the margin for the request's own trip and the clocks' drift
SAFE_SHARE = 0.8


class LeaseLost(BaseException):
    """The job is not this worker's any more. A BaseException, as CancelledError is: no handler of the
    processor's may turn it into an outcome (an error outcome stored for a job another worker holds
    would be refused anyway); the worker loop catches it and gives the job up silently."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(slots=True)
class JobLease:
    """What the worker knows of one running job's lease. `score`: the job's queue score (a lapsed
    hand-over's lease is set again with it, see queue_renew.lua)."""

    job_id: str
    score: int
    since: float  # monotonic: when it was claimed or handed over (its lease set)
    held_until: float  # monotonic: surely held until then
    taken: bool = True  # a hand-over not yet taken can be taken back before its lease ends
    lost: bool = False  # another worker holds the job now, or it ended elsewhere

    def confirmed(self, sent_at: float, lease_s: float) -> None:
        """A claim, take or renewal sent at `sent_at` (monotonic) confirmed the lease."""
        if self.taken and not self.lost:
            self.held_until = max(self.held_until, sent_at + lease_s * SAFE_SHARE)

    def took(self, lease_s: float) -> None:
        """The worker took its hand-over: the lease the hand-over set is all that holds it now."""
        self.taken = True
        self.confirmed(self.since, lease_s)

    def reclaimed(self, sent_at: float, lease_s: float) -> None:
        """This worker claimed its own running job again (its lease had lapsed, nobody else took it)."""
        self.lost = False
        self.taken = True
        self.confirmed(sent_at, lease_s)

    def verdict(self, held: int) -> None:
        """A renewal's verdict (queue_renew.lua): held (1), over (0) or fenced (-1). Over, while this
        worker still runs the job, means it ended elsewhere (another worker finished it after
        retaking it, a batch was cancelled): lost all the same."""
        if held != 1:
            self.lost = True

    @classmethod
    def claimed(cls, job_id: str, score: int, sent_at: float, lease_s: float) -> JobLease:
        return cls(job_id, score, sent_at, sent_at + lease_s * SAFE_SHARE)

    @classmethod
    def handed_over(cls, job_id: str, score: int, handed_at_ms: int, take_s: float) -> JobLease:
        """A hand-over is held from `handed_at_ms` (Redis's clock, as its take bound is judged; never
        later than now, should the clocks disagree)."""
        now = time.monotonic()
        handed_at = now - max(now_ms() - handed_at_ms, 0) / 1000
        return cls(job_id, score, handed_at, handed_at + take_s * SAFE_SHARE, taken=False)


Renew = Callable[[JobLease], Awaitable[None]]


@dataclass(slots=True)
class _Current:
    lease: JobLease
    renew: Renew  # asks Redis about this one lease (and renews it if held): sets `held_until` or `lost`


# each job runs in a task of its own (GatewayWorker._launch), so this is per job
_current: ContextVar[_Current | None] = ContextVar("job_lease", default=None)


def hold(lease: JobLease, renew: Renew) -> None:
    """In a job's own task: the lease `check_lease` checks from now on."""
    _current.set(_Current(lease, renew))


async def check_lease() -> None:
    """Raise LeaseLost unless the running job's worker still holds it (a no-op outside a worker's job:
    a processor driven directly holds no lease)."""
    current = _current.get()
    if current is None:
        return
    lease = current.lease
    if not lease.lost and time.monotonic() < lease.held_until:
        return
    if not lease.lost:
        await current.renew(lease)
    if lease.lost:
        raise LeaseLost(lease.job_id)
