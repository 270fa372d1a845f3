"""The batch feeder's concurrency window: small when batch calls only queue, large when they wait on
a slow provider."""

from __future__ import annotations

from workers.batch_feeder import BATCH_ONLY_QUEUEING, SHARED_QUEUEING, ConcurrencyWindow


def drive(window: ConcurrencyWindow, duration_of, rounds: int = 400) -> float:
    for _ in range(rounds):
        for _ in range(max(1, int(window.value))):
            window.observe(duration_of(window.value))
    return window.value


def test_cpu_bound_calls_keep_the_window_to_a_few_queued() -> None:
    # each call is 2 ms of service; every call in flight beyond the first queues behind the others
    final = drive(ConcurrencyWindow(150), lambda w: 2.0 * w)
    assert final <= 8


def test_a_slow_provider_opens_the_window_to_its_ceiling() -> None:
    # 2 s calls, nothing queues: the window grows to the ceiling, fast
    window = ConcurrencyWindow(150)
    assert drive(window, lambda w: 2000.0, rounds=30) == 150


def test_the_window_follows_a_provider_that_becomes_slow() -> None:
    window = ConcurrencyWindow(150)
    drive(window, lambda w: 2.0 * w)
    assert window.value <= 8
    assert drive(window, lambda w: 1500.0 + 0.5 * w, rounds=200) >= 100


def test_a_batch_only_worker_lets_more_calls_queue() -> None:
    # the same CPU-bound calls: a batch-only worker's window holds more of them in flight, but still
    # a bounded few beyond what its queueing allowance says
    shared = drive(ConcurrencyWindow(150, alpha=SHARED_QUEUEING[0], beta=SHARED_QUEUEING[1]), lambda w: 2.0 * w)
    alone = drive(ConcurrencyWindow(150, alpha=BATCH_ONLY_QUEUEING[0], beta=BATCH_ONLY_QUEUEING[1]), lambda w: 2.0 * w)
    assert shared <= 8 < alone <= 2 * BATCH_ONLY_QUEUEING[1]
