"""Hosts on this machine: network namespaces joined by one bridge, for tests of a gateway spread over
several hosts (tests/integration/test_hosts_netns.py). Needs root (`ip netns`).

The bridge lives in the first host's namespace (the "core" host); every other host is a namespace
with one veth pair to it (`eth0` on the host's side). Addresses are in 10.77.0.0/24 and exist only
inside the namespaces: nothing is added to the machine's own network. A host is cut off by setting
its `eth0` down (its TCP connections stay open, their packets go nowhere, as on a pulled cable) and
comes back by setting it up. `Network.close` deletes every namespace (and with it the veths); it runs
even when a test fails. Processes run in a host with `ip netns exec` (which execs: the pid is the
program's), and the test's own calls reach a host's network from a thread that joined it
(`Network.caller`)."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
SUBNET = "10.77.0"
_CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_permitted() -> str | None:
    """None if namespaces can be made here, else why not."""
    probe = f"gw-probe-{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        return f"`ip netns add` is not permitted here: {detail}"
    ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Host:
    name: str  # the short name the test gives it
    netns: str
    address: str

    def argv(self, *command: str) -> list[str]:
        """`command` run inside this host's network."""
        return ["ip", "netns", "exec", self.netns, *command]

    def cut(self) -> None:
        ip("-n", self.netns, "link", "set", "eth0", "down")

    def reconnect(self) -> None:
        ip("-n", self.netns, "link", "set", "eth0", "up")


@dataclass
class Network:
    hosts: dict[str, Host] = field(default_factory=dict)
    _callers: list[concurrent.futures.ThreadPoolExecutor] = field(default_factory=list)

    @classmethod
    def build(cls, core: str, *others: str) -> Network:
        """`core` (holding the bridge, at .1) and `others` (at .11, .12, ...)."""
        tag = uuid.uuid4().hex[:6]
        net = cls()
        try:
            core_ns = f"gw-{tag}-{core}"
            ip("netns", "add", core_ns)
            net.hosts[core] = Host(core, core_ns, f"{SUBNET}.1")  # from here on, close() deletes it
            ip("-n", core_ns, "link", "set", "lo", "up")
            ip("-n", core_ns, "link", "add", "br0", "type", "bridge")
            ip("-n", core_ns, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
            ip("-n", core_ns, "link", "set", "br0", "up")
            for i, name in enumerate(others):
                ns, address = f"gw-{tag}-{name}", f"{SUBNET}.{11 + i}"
                ip("netns", "add", ns)
                net.hosts[name] = Host(name, ns, address)
                ip("-n", ns, "link", "set", "lo", "up")
                ip("-n", core_ns, "link", "add", f"vb{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                ip("-n", core_ns, "link", "set", f"vb{i}", "master", "br0", "up")
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            net.close()
            raise
        return net

    def caller(self, host: str) -> Callable[[Callable[[], T]], T]:
        """`call(fn)`: runs `fn` on a thread that joined `host`'s network (its sockets are made there)."""
        netns = self.hosts[host].netns

        def join() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)

        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"in-{host}", initializer=join)
        self._callers.append(pool)

        def call(fn: Callable[[], T]) -> T:
            return pool.submit(fn).result()

        return call

    def close(self) -> None:
        for pool in self._callers:
            pool.shutdown(wait=False, cancel_futures=True)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=10, check=False)
        self.hosts.clear()
