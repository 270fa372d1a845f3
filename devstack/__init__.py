"""Start the gateway's processes locally (Redis, simulator, workers, API) with readiness checks.

Used by the test suite and the benchmarks; every wait is a poll with a deadline, never a bare sleep.
"""
