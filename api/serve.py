"""`python -m api.serve`: N API processes on one port, balanced by the kernel (SO_REUSEPORT), supervised.

With a shared listening socket, whichever process wakes first accepts, and keep-alive clients
can all end up on one process. With SO_REUSEPORT each process has its own socket and the kernel
spreads connections across them by hashing the connection's addresses. With more than one process
the parent only supervises them (api/supervisor.py): a process that dies is started again.

Each connection is bounded (plumbing/http_head_limits.py): a request's head by API_MAX_HEADER_BYTES and
API_HEADER_TIMEOUT_S, the idle time between requests by API_KEEP_ALIVE_S.

Third-party internals touched: uvicorn's `Server.started` (whether the app's start-up completed).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import resource
import socket
import sys
import traceback
from multiprocessing.process import BaseProcess

import uvicorn

from api.http_protocol import ApiHttpProtocol
from api.jwt_keys import WeakSecret
from api.supervisor import EX_CONFIG, STARTUP_FAILURE, Supervisor
from plumbing.heap import freeze_startup_heap
from shared.logging_setup import configure_logging
from shared.settings import get_settings


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def raise_open_files_limit() -> None:
    """Soft limit on open files up to the hard one: each connection is a descriptor, and the usual soft
    limit (1,024) would refuse connections long before memory or CPU run short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve_one(host: str, port: int, app: str) -> None:
    try:
        config = server_config(app)
        config.load()  # imports and builds the app now, so that the heap can be frozen before serving
    except WeakSecret as exc:
        # a configuration error, not a crash: one line, and sysexits' EX_CONFIG (a restart cannot help)
        print(f"api: refusing to start: {exc}", file=sys.stderr)
        sys.exit(EX_CONFIG)
    except (Exception, SystemExit) as exc:  # a bad setting, an app that cannot be built (uvicorn exits 1)
        if not isinstance(exc, SystemExit):
            traceback.print_exc()
        sys.exit(STARTUP_FAILURE)  # the supervisor does not try again what cannot work
    raise_open_files_limit()
    freeze_startup_heap()
    server = uvicorn.Server(config)
    server.run(sockets=[reuseport_socket(host, port)])
    if not server.started:  # the app's start-up (lifespan) failed, or a signal came first
        sys.exit(STARTUP_FAILURE)


def server_config(app: str) -> uvicorn.Config:
    settings = get_settings()
    return uvicorn.Config(
        app,
        factory=True,
        loop="uvloop",
        http=ApiHttpProtocol.configured(settings),  # one write per answer, bounded request heads
        access_log=False,
        log_level="warning",
        timeout_keep_alive=settings.api_keep_alive_s,
        limit_concurrency=settings.api_limit_concurrency,
        backlog=4096,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8000")))
    parser.add_argument("--processes", type=int, default=int(os.environ.get("API_PROCESSES", "1")))
    parser.add_argument("--app", default="api.app:create_default_app")
    args = parser.parse_args(argv)
    if args.processes <= 1:
        serve_one(args.host, args.port, args.app)
        return
    configure_logging("api")
    preload(args.app)
    ctx = multiprocessing.get_context("fork")

    def start(slot: int) -> BaseProcess:
        child = ctx.Process(target=serve_one, args=(args.host, args.port, args.app), name=f"api-{slot}")
        child.start()
        return child

    sys.exit(Supervisor(start, args.processes).run())


def preload(app: str) -> None:
    """Imports the app's modules in the parent, before any child is forked.

    A child forked from a parent that has them starts serving in a fraction of the time a fresh
    interpreter takes to import them (a replacement is the one capacity is waiting for), and the
    imported code is shared copy-on-write. Nothing else happens here: no settings read, no app built,
    no connection or thread made, so each child starts from the state a fresh process would have."""
    importlib.import_module(app.partition(":")[0])
    freeze_startup_heap()  # the parent's objects stay out of the children's collections (fewer copied pages)


if __name__ == "__main__":
    main()
