"""Serve the simulator with uvicorn (uvloop + httptools, no access log).

Third-party internals touched (uvicorn; pinned in pyproject.toml, checked by
tests/unit/test_plumbing_internals.py): uvicorn's `HttpToolsProtocol` (through
`plumbing.http_server`), subclassed: `on_message_begin` extended, its `scope` and `transport` used.
"""

from __future__ import annotations

import uvicorn

from simulator.app import TRANSPORT_EXTENSION, create_app

try:
    from plumbing.http_server import OneWriteHttpToolsProtocol
except ImportError:  # pragma: no cover - httptools missing: h11, drop falls back to send.__self__
    OneWriteHttpToolsProtocol = None  # type: ignore[assignment,misc]


if OneWriteHttpToolsProtocol is not None:

    class SimulatorProtocol(OneWriteHttpToolsProtocol):
        """httptools protocol (head and body in one write, as the API's) that hands the app its transport
        so a `drop` fault can close it."""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = {TRANSPORT_EXTENSION: {"transport": self.transport}}


def build_config(
    host: str,
    port: int,
    latency_ms: float,
    seed: int | None,
    log_level: str = "warning",
) -> uvicorn.Config:
    http: object = SimulatorProtocol if OneWriteHttpToolsProtocol is not None else "h11"
    return uvicorn.Config(
        create_app(latency_ms, seed),
        host=host,
        port=port,
        loop="uvloop",
        http=http,  # type: ignore[arg-type]
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=4096,
        timeout_keep_alive=120,  # longer than clients' pool expiry: no idle-close races
        timeout_graceful_shutdown=1,  # hung requests must not block shutdown
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


def serve(
    host: str,
    port: int,
    latency_ms: float = 20.0,
    seed: int | None = None,
    log_level: str = "warning",
) -> None:
    uvicorn.Server(build_config(host, port, latency_ms, seed, log_level)).run()
