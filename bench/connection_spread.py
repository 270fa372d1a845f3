"""Do keep-alive connections spread over the API processes? (`api/serve.py`, SO_REUSEPORT)

Starts the stack with N API processes (default 2), then `--runs` times opens `--connections`
fresh keep-alive connections, sends one request on each (so each is accepted and live), counts
which API process holds each connection (its socket inodes in /proc/<pid>/fd against the
established sockets of the API port in /proc/net/tcp*), and closes them.

Prints the distribution per run, then one JSON line: {"runs": [[n_proc0, n_proc1, ...], ...],
"min_share": lowest share of any process in any run, "max_share": highest}.
A share of 1.0 means one process got every connection.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/connection_spread.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.procs import Proc
from devstack.stack import Stack


def children(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads' children)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            continue
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def api_server_pids(api: Proc) -> list[int]:
    """The processes that serve HTTP: the API process itself, or its server children (forked; a
    multiprocessing resource tracker, if any, left out)."""
    servers = [c for c in children(api.popen.pid) if "resource_tracker" not in cmdline(c)]
    return sorted(servers) or [api.popen.pid]


def established_inodes(port: int, *, remote: bool = False) -> set[str]:
    """Socket inodes of established TCP connections whose local port is `port` (server side), or with
    `remote` whose peer's port is `port` (client side: connections to that server)."""
    inodes: set[str] = set()
    column = 2 if remote else 1
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    address, state, inode = cols[column], cols[3], cols[9]
                    if state == "01" and int(address.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except FileNotFoundError:
            continue
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def count_per_process(pids: list[int], port: int) -> list[int]:
    live = established_inodes(port)
    return [len(socket_inodes(pid) & live) for pid in pids]


def read_response(sock: socket.socket) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; return its status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        rest += chunk
    return int(lines[0].split()[1])


def one_run(host: str, port: int, pids: list[int], connections: int, token: str) -> list[int]:
    request = (f"GET /livez HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(connections):
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(request)
            status = read_response(sock)
            if status != 200:
                raise RuntimeError(f"GET /livez answered {status}")
            socks.append(sock)
        return count_per_process(pids, port)
    finally:
        for sock in socks:
            sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args(argv)

    stack = Stack()
    try:
        stack.start(workers=1, latency_ms=20, api_processes=args.api_processes)
        assert stack.api is not None
        host, port = stack.api_url.removeprefix("http://").rsplit(":", 1)
        pids = api_server_pids(stack.api)
        print(f"API processes: {len(pids)} (pids {pids}) on port {port}; {args.connections} connections per run")
        runs: list[list[int]] = []
        for i in range(args.runs):
            counts = one_run(host, int(port), pids, args.connections, stack.token())
            if sum(counts) != args.connections:
                print(f"  warning: counted {sum(counts)} of {args.connections} connections", file=sys.stderr)
            runs.append(counts)
            total = sum(counts) or 1
            pretty = " ".join(f"{c / total:.0%}" for c in counts)
            print(f"run {i + 1}: connections per process {counts}  shares {pretty}")
        shares = [c / (sum(r) or 1) for r in runs for c in r]
        summary = {"runs": runs, "min_share": round(min(shares), 3), "max_share": round(max(shares), 3)}
    finally:
        stack.stop()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
