"""Redis beyond one server, on this machine: a replica, Sentinels that watch a primary and fail it over,
and a Redis that speaks only TLS (its certificate from an authority made on the spot, as
devstack/nginx.py makes them). For tests/integration/test_sentinel.py and bench/durability.py.

`redis-sentinel` is `redis-server <config> --sentinel`; a Sentinel rewrites its config file (what it
learns of replicas and of the other Sentinels), so each one gets a file of its own."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from devstack.nginx import Authority, issue_server_cert, make_authority
from devstack.procs import REDIS_BOUNDS, Proc, ProcGroup, free_port, start_redis, wait_until

MASTER = "mymaster"


def start_replica(
    group: ProcGroup, primary_port: int, port: int | None = None, *, appendonly: bool = True
) -> tuple[Proc, str]:
    """A replica of the Redis on `primary_port` (on `port`, e.g. a failed primary's, coming back as a
    replica of the one that replaced it), ready once its first sync is done."""
    primary = redis.Redis(port=primary_port)
    try:
        primary.config_set("repl-diskless-sync-delay", 0)  # 5 s by default: waiting for more replicas
    finally:
        primary.close()
    proc, url = start_redis(
        group,
        port,
        appendonly=appendonly,
        appendfsync="everysec",
        extra=("--replicaof", "127.0.0.1", str(primary_port)),
    )
    client = redis.Redis.from_url(url)
    primary = redis.Redis(port=primary_port)
    try:
        wait_until(lambda: _replication(client).get("master_link_status") == "up", 20, "replica in sync", proc.popen)
        # and online as the primary sees it: until then its WAIT counts the replica out
        wait_until(lambda: _online_on(primary, proc), 20, "replica online at the primary", proc.popen)
    finally:
        client.close()
        primary.close()
    return proc, url


def _online_on(primary: redis.Redis, replica: Proc) -> bool:
    info = _replication(primary)
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return any(r.get("state") == "online" and replica.name == f"redis-{r.get('port')}" for r in replicas)


def _replication(client: redis.Redis) -> dict[str, Any]:
    info: dict[str, Any] = client.info("replication")  # type: ignore[assignment]
    return info


@dataclass
class Sentinels:
    procs: list[Proc] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def hosts(self) -> str:
        """As REDIS_SENTINELS takes them."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def primary_port(self) -> int | None:
        """The primary's port as the first Sentinel that answers names it (None: none answers)."""
        for port in self.ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                host_port = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)  # type: ignore[no-untyped-call]
                return int(host_port[1])
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None


def start_sentinels(
    group: ProcGroup, primary_port: int, *, count: int = 3, down_after_ms: int = 1000, replicas: int = 1
) -> Sentinels:
    """`count` Sentinels watching the primary (a quorum of a majority); each is ready once it sees the
    other Sentinels and `replicas` replicas, so that a failover can be voted at once."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    found = Sentinels()
    for _ in range(count):
        port = free_port()
        conf = group.workdir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {group.workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} {count // 2 + 1}\n"
            f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER} {max(down_after_ms * 4, 3000)}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        found.procs.append(group.spawn(f"sentinel-{port}", [binary, str(conf), "--sentinel"]))
        found.ports.append(port)
    for port, proc in zip(found.ports, found.procs, strict=True):
        client = redis.Redis(port=port, socket_timeout=1)
        try:

            def ready(client: redis.Redis = client) -> bool:
                state = client.execute_command("SENTINEL", "master", MASTER)  # type: ignore[no-untyped-call]
                fields = dict(zip(state[::2], state[1::2], strict=True))
                return int(fields[b"num-other-sentinels"]) >= count - 1 and int(fields[b"num-slaves"]) >= replicas

            wait_until(ready, 30, f"sentinel {port} sees its peers", proc.popen)
        finally:
            client.close()
    return found


@dataclass(frozen=True)
class TlsRedis:
    proc: Proc
    url: str  # rediss://, without the CA: pass `authority.pem` (REDIS_CA_FILE or ?ssl_ca_certs=)
    authority: Authority


def start_tls_redis(group: ProcGroup) -> TlsRedis:
    """A Redis that speaks only TLS, its certificate (for 127.0.0.1 and localhost) signed by an
    authority made on the spot; clients need not present a certificate."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    directory: Path = group.workdir / "redis-tls"
    directory.mkdir(exist_ok=True)
    authority = make_authority(directory, "redis-ca")
    chain, key = issue_server_cert(authority, directory)
    port = free_port()
    argv = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir"]
    argv += [str(directory), "--tls-cert-file", str(chain), "--tls-key-file", str(key)]
    argv += ["--tls-ca-cert-file", str(authority.pem), "--tls-auth-clients", "no", *REDIS_BOUNDS]
    proc = group.spawn(f"redis-tls-{port}", argv)
    url = f"rediss://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, ssl_ca_certs=str(authority.pem))
    try:
        wait_until(lambda: bool(client.ping()), 10, f"TLS redis on {port}", proc.popen)
    finally:
        client.close()
    return TlsRedis(proc, url, authority)
