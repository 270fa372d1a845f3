"""Subprocess handles with event-driven readiness and clean teardown."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll `check` until it holds; fail with `what` after `timeout` or if `proc` exits."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    raise TimeoutError(f"{what}: not ready after {timeout}s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ProcGroup:
    """Processes started together and stopped together (in reverse order)."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gateway-")))
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        popen = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def python(self, name: str, module_args: list[str], env: dict[str, str] | None = None) -> Proc:
        return self.spawn(name, [sys.executable, "-m", *module_args], env)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


# As README's "Sizing Redis" asks of every Redis the gateway uses: a memory bound that refuses writes
# rather than evicting (a queued job, a lease or a bucket evicted would be lost silently), and request
# records that stay listpacks (a result over 64 bytes would turn a record into a hashtable: +30%).
REDIS_BOUNDS = ("--maxmemory", "2gb", "--maxmemory-policy", "noeviction", "--hash-max-listpack-value", "4096")


def start_redis(
    group: ProcGroup,
    port: int | None = None,
    *,
    appendonly: bool = False,
    appendfsync: str = "always",
    extra: Sequence[str] = (),
) -> tuple[Proc, str]:
    """A redis-server on 127.0.0.1 (its data under the group's directory, reused when restarted on
    the same port); `extra`: more of redis-server's options (`--replicaof`, TLS)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    data = group.workdir / f"redis-{port}"
    data.mkdir(exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(data),
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        appendfsync,
        *REDIS_BOUNDS,
        *extra,
    ]
    proc = group.spawn(f"redis-{port}", argv)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_until(lambda: bool(client.ping()), 10, f"redis on {port}", proc.popen)
    client.close()
    return proc, url


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=1.0).status_code < 500
