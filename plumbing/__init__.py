"""The plumbing: how bytes travel and how the processes stay fast, behind small public interfaces.

Nothing here knows the domain (requests, providers, limits): `make lint` checks that no module of
this package imports `shared`, `api` or `workers`. Each module's docstring lists the third-party
internals it touches; `pyproject.toml` pins those libraries to the versions tested, and
`tests/unit/test_plumbing_internals.py` fails with a clear message when one of them is gone.
"""
