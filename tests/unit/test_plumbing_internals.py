"""Every third-party internal the code touches is still there, in the libraries installed.

Private attributes, private modules and functions, subclassed internals: each is listed in the
docstring of the module that touches it and its library is pinned in pyproject.toml to the versions
tested. A new version that drops or renames one fails here, naming the library, its version, the
internal and the module that needs it, instead of failing somewhere deep under load. One case per
internal; a case removed from here is an internal no longer touched (its docstring line and, if it
was the library's last, its pin go too).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import pytest


@dataclass(frozen=True)
class Internal:
    library: str  # the distribution pinned in pyproject.toml
    used_by: str  # the module that touches it
    name: str  # dotted: module[:attribute path]
    check: Callable[[], bool]

    def __str__(self) -> str:
        return f"{self.library}:{self.name}"


def _resolve(path: str) -> Any:
    module, _, attrs = path.partition(":")
    obj: Any = importlib.import_module(module)
    for attr in filter(None, attrs.split(".")):
        obj = getattr(obj, attr)
    return obj


def exists(library: str, used_by: str, path: str) -> Internal:
    """A module, or an attribute of a module or class (a method, a class attribute)."""

    def check() -> bool:
        try:
            _resolve(path)
        except (ImportError, AttributeError):
            return False
        return True

    return Internal(library, used_by, path, check)


def on_instance(library: str, used_by: str, cls: str, attr: str, make: Callable[[Any], Any]) -> Internal:
    """An attribute a class sets on its instances (in `__init__`): checked on one made by `make(cls)`."""

    def check() -> bool:
        try:
            return hasattr(make(_resolve(cls)), attr)
        except (ImportError, AttributeError):
            return False

    return Internal(library, used_by, f"{cls}().{attr}", check)


def parameter(library: str, used_by: str, function: str, name: str) -> Internal:
    """A parameter of a function we call or override, by name (or, `#n`, by position)."""

    def check() -> bool:
        try:
            params = list(inspect.signature(_resolve(function)).parameters)
        except (ImportError, AttributeError):
            return False
        if name.startswith("#"):  # position counts `self`
            position, _, expected = name[1:].partition("=")
            return len(params) > int(position) and params[int(position)] == expected
        return name in params

    return Internal(library, used_by, f"{function}({name})", check)


def assigned(library: str, used_by: str, cls: str, attr: str) -> Internal:
    """An attribute a class sets on its instances where making one takes a running server: found in
    the source of the class or one of its bases (`self.<attr> =`)."""

    def check() -> bool:
        try:
            classes = [c for c in inspect.getmro(_resolve(cls)) if c is not object]
        except (ImportError, AttributeError):
            return False
        return any(f"self.{attr} =" in inspect.getsource(c) or f"self.{attr}:" in inspect.getsource(c) for c in classes)

    return Internal(library, used_by, f"{cls}().{attr}", check)


def _redis() -> Any:
    from redis.asyncio import Redis

    return Redis()  # no connection is made until a command runs


def _uvicorn_config() -> Any:
    import uvicorn

    return uvicorn.Config("api.app:create_default_app")


_CONN = "redis.asyncio.connection:AbstractConnection"
_RC, _LANE, _TRIP = "plumbing/redis_connection.py", "plumbing/redis_lane.py", "plumbing/round_trip.py"
_AIO = "plumbing/aiohttp_transport.py"
_WORKER = "workers/worker.py"
_SIM = "simulator/server.py, simulator/app.py"
_HEAD, _ONE = "plumbing/http_head_limits.py", "plumbing/http_server.py"
_HTP = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"

INTERNALS = [
    # redis-py: the hiredis packing and reading connection
    exists("redis", _RC, "redis._parsers.hiredis:_AsyncHiredisParser"),
    exists("redis", _RC, "redis._parsers.hiredis:NOT_ENOUGH_DATA"),
    on_instance("redis", _RC, "redis._parsers.hiredis:_AsyncHiredisParser", "_reader", lambda c: c(65536)),
    on_instance("redis", _RC, "redis._parsers.hiredis:_AsyncHiredisParser", "_connected", lambda c: _disconnected(c)),
    exists("redis", _RC, "redis.connection:HiredisRespSerializer.pack"),
    exists("redis", _RC, f"{_CONN}.pack_command"),
    exists("redis", _RC, f"{_CONN}.pack_commands"),
    exists("redis", _RC, f"{_CONN}.send_packed_command"),
    parameter("redis", _RC, f"{_CONN}.send_packed_command", "check_health"),
    exists("redis", _RC, f"{_CONN}.read_response"),
    parameter("redis", _RC, f"{_CONN}.read_response", "disconnect_on_error"),
    parameter("redis", _RC, f"{_CONN}.read_response", "push_request"),
    exists("redis", _RC, f"{_CONN}.is_connected"),
    exists("redis", _RC, f"{_CONN}.check_health"),
    parameter("redis", _RC, f"{_CONN}.disconnect", "nowait"),
    on_instance("redis", _RC, "redis.asyncio:Connection", "_writer", lambda c: c()),
    on_instance("redis", f"{_RC}, {_LANE}", "redis.asyncio:Connection", "_parser", lambda c: c()),
    on_instance("redis", _RC, "redis.asyncio:Connection", "socket_timeout", lambda c: c()),
    on_instance("redis", _RC, "redis.asyncio:Connection", "health_check_interval", lambda c: c()),
    on_instance("redis", _RC, "redis.asyncio:Connection", "next_health_check", lambda c: c()),
    on_instance("redis", f"{_RC}, {_LANE}", "redis.asyncio:ConnectionPool", "connection_class", lambda c: c()),
    on_instance("redis", _LANE, "redis.asyncio:ConnectionPool", "connection_kwargs", lambda c: c()),
    # redis-py: scripts and pipelines
    on_instance("redis", f"{_LANE}, {_TRIP}", "redis.commands.core:AsyncScript", "sha", lambda c: _script()),
    on_instance("redis", _LANE, "redis.commands.core:AsyncScript", "script", lambda c: _script()),
    on_instance("redis", _TRIP, "redis.asyncio.client:Pipeline", "command_stack", lambda c: _redis().pipeline()),
    on_instance("redis", _TRIP, "redis.asyncio:Redis", "response_callbacks", lambda c: c()),
    exists("redis", _TRIP, "redis.client:EMPTY_RESPONSE"),
    exists("redis", _TRIP, "redis.client:NEVER_DECODE"),
    # httpx-aiohttp: the provider transport over aiohttp
    exists("httpx-aiohttp", _AIO, "httpx_aiohttp:AiohttpTransport.handle_async_request"),
    exists("httpx-aiohttp", _AIO, "httpx_aiohttp:AiohttpTransport.get_client"),
    exists("httpx-aiohttp", _AIO, "httpx_aiohttp.transport:map_aiohttp_exceptions"),
    on_instance("httpx-aiohttp", _AIO, "httpx_aiohttp:AiohttpTransport", "client", lambda c: c()),
    on_instance("httpx-aiohttp", _AIO, "httpx_aiohttp:AiohttpTransport", "proxy", lambda c: c()),
    # genai-prices: its bundled price data, read directly
    exists("genai-prices", "shared/pricing.py", "genai_prices.data_snapshot:get_snapshot"),
    exists("genai-prices", "shared/pricing.py", "genai_prices.data_snapshot:find_provider_by_id"),
    # uvicorn: the server protocols subclass its httptools protocol; the simulator's hands its transport
    # to the app
    exists("uvicorn", f"{_HEAD}, {_SIM}", f"{_HTP}.on_message_begin"),
    exists("uvicorn", f"{_HEAD}, {_ONE}", f"{_HTP}.on_headers_complete"),
    exists("uvicorn", _HEAD, f"{_HTP}.on_message_complete"),
    exists("uvicorn", _HEAD, f"{_HTP}._unset_keepalive_if_required"),
    *[assigned("uvicorn", _HEAD, _HTP, a) for a in ("flow", "connections", "server_state", "parser")],
    assigned("uvicorn", f"{_HEAD}, {_ONE}, {_SIM}", _HTP, "transport"),
    assigned("uvicorn", f"{_HEAD}, {_ONE}", _HTP, "cycle"),
    assigned("uvicorn", f"{_HEAD}, {_ONE}", _HTP, "loop"),
    assigned("uvicorn", _SIM, _HTP, "scope"),
    assigned("uvicorn", _HEAD, "uvicorn.protocols.http.httptools_impl:RequestResponseCycle", "response_complete"),
    assigned("uvicorn", _HEAD, "uvicorn.protocols.http.httptools_impl:RequestResponseCycle", "keep_alive"),
    parameter("uvicorn", _SIM, "uvicorn.protocols.http.httptools_impl:RequestResponseCycle", "transport"),
    on_instance("uvicorn", "api/serve.py", "uvicorn.server:Server", "started", lambda c: c(_uvicorn_config())),
    # arq: the worker's own loop reads arq's job format with an undocumented helper
    exists("arq", _WORKER, "arq.jobs:deserialize_job_raw"),
]


def _disconnected(parser_class: Any) -> Any:
    """A hiredis parser as a connection leaves it: `_connected` is set on (dis)connection only."""
    parser = parser_class(65536)
    parser.on_disconnect()
    return parser


def _script() -> Any:
    return _redis().register_script("return 1")


@pytest.mark.parametrize("internal", INTERNALS, ids=str)
async def test_internal_is_there(internal: Internal) -> None:
    assert internal.check(), (
        f"{internal.library} {version(internal.library)}: `{internal.name}` is gone or changed; "
        f"{internal.used_by} touches it (see its docstring). Adapt that module to this version of "
        f"{internal.library}, or keep {internal.library} within the range pinned in pyproject.toml."
    )


def test_every_pinned_library_has_an_upper_bound() -> None:
    """A library whose internals are touched is pinned below its next minor version."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    requirements = {
        r.split("[")[0].split(">")[0].split("<")[0].strip(): r for r in pyproject["project"]["dependencies"]
    }
    for library in sorted({internal.library for internal in INTERNALS}):
        assert "<" in requirements[library], f"{library} has internals touched but no upper bound in pyproject.toml"
