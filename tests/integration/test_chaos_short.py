"""The chaos soak's short version (bench/chaos.py, under two minutes): mixed traffic while a worker
and an API process are SIGKILLed, Redis is SIGKILLed and restarted on its AOF, a worker is paused
past its lease and the simulator throws 5xx, 429, hangs and drops; bad input at the edges once.
Every request the gateway acknowledged ends exactly once, with a result or a typed error."""

from __future__ import annotations

import asyncio

from bench import chaos


def test_a_short_chaos_soak_loses_nothing_acknowledged_and_answers_each_once() -> None:
    args = chaos.parser().parse_args(
        ["--minutes", "0.75", "--seed", "18", "--warmup-s", "10", "--settle-s", "40", "--edge-runs", "1"]
    )
    line, edges = asyncio.run(chaos.soak(args))

    assert line["accepted"] > 0
    assert line["worker_kills"] >= 1 and line["api_kills"] >= 1 and line["redis_kills"] >= 1, line
    assert line["pauses"] >= 1, line
    assert (line["lost"], line["answered_twice"], line["stuck"]) == (0, 0, 0), line
    assert line["ended"] == line["accepted"], line
    # every edge gets its answer, but for the known gaps the soak reports (bench/chaos.py KNOWN_GAPS)
    assert [name for name, ok, _ in edges if not ok and name not in chaos.KNOWN_GAPS] == [], edges
