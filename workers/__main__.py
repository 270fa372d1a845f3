"""`python -m workers openai` runs one worker process serving one provider's queue."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import get_args

import uvloop

from plumbing.heap import freeze_startup_heap
from shared.logging_setup import configure_logging
from shared.routing import PROVIDERS
from shared.settings import JobKinds, get_settings
from workers.runtime import build_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("provider", choices=PROVIDERS)
    parser.add_argument("--max-jobs", type=int, default=None, help="concurrent jobs in this process")
    parser.add_argument("--kinds", choices=get_args(JobKinds), default=None, help="jobs it takes (WORKER_JOB_KINDS)")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(f"worker-{args.provider}")
    asyncio.set_event_loop(uvloop.new_event_loop())
    overrides = {"max_jobs": args.max_jobs} if args.max_jobs else {}
    kinds = args.kinds or settings.worker_job_kinds
    if kinds == "batch":
        # batch items yield the CPU to the API, Redis and the workers serving waiting callers
        os.nice(settings.worker_batch_nice)
    worker = build_worker(args.provider, settings, kinds=kinds, **overrides)
    freeze_startup_heap()
    worker.run()


if __name__ == "__main__":
    main()
