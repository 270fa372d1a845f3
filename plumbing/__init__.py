"""The plumbing: how bytes travel and how the processes stay fast, behind small public interfaces.

Nothing here knows the domain (requests, providers, limits): `make lint` checks that no module of
this package imports `shared`, `api` or `workers`. The domain types against the protocols of
`plumbing.interfaces` (a `Trip` to queue Redis commands on, a `TripSender`, a `ScriptRunner`) and
knows provider transports only as `httpx.AsyncBaseTransport`; the concrete classes are chosen where
a process is put together. Each module's docstring lists the third-party internals it touches;
`pyproject.toml` pins those libraries to the versions tested, and
`tests/unit/test_plumbing_internals.py` fails with a clear message when one of them is gone.
"""
