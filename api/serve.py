"""`python -m api.serve`: N API processes on one port, balanced by the kernel (SO_REUSEPORT).

With a shared listening socket, whichever process wakes first accepts, and keep-alive clients
can all end up on one process. With SO_REUSEPORT each process has its own socket and the kernel
spreads connections across them by hashing the connection's addresses.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import sys
from types import FrameType

import uvicorn

from plumbing.heap import freeze_startup_heap
from plumbing.http_server import OneWriteHttpToolsProtocol
from shared.jwt_keys import WeakSecret

EX_CONFIG = 78  # sysexits.h: the configuration is wrong


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def serve_one(host: str, port: int, app: str) -> None:
    config = uvicorn.Config(
        app,
        factory=True,
        loop="uvloop",
        http=OneWriteHttpToolsProtocol,  # head and body of an answer in one write
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        backlog=4096,
    )
    try:
        config.load()  # imports and builds the app now, so that the heap can be frozen before serving
    except WeakSecret as exc:
        # a configuration error, not a crash: one line, and sysexits' EX_CONFIG (a restart cannot help)
        print(f"api: refusing to start: {exc}", file=sys.stderr)
        sys.exit(EX_CONFIG)
    freeze_startup_heap()
    uvicorn.Server(config).run(sockets=[reuseport_socket(host, port)])


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
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=serve_one, args=(args.host, args.port, args.app), name=f"api-{i}")
        for i in range(args.processes)
    ]
    for child in children:
        child.start()

    def stop(signum: int, _: FrameType | None) -> None:
        for child in children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)

    def forward_hup(signum: int, _: FrameType | None) -> None:
        for child in children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGHUP)  # reload keys in every process

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward_hup)
    for child in children:
        child.join()
    sys.exit(max((c.exitcode or 0) for c in children))


if __name__ == "__main__":
    main()
