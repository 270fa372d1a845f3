"""A real HTTPS server in front of a local one: Debian's nginx, started as a child process with a
configuration of its own, terminating TLS with certificates from an authority made on the spot.

The provider transports' tests (tests/integration/test_provider_transport_nginx.py) put it in front
of the simulator, so that a transport meets what a provider's edge does to it: kept-alive
connections closed by the server (after `keepalive_requests` answers, or `keepalive_timeout` idle),
chunked and gzip-encoded answers, and a certificate that must chain to a trusted authority. Paths:
`/...` passes answers through as the upstream framed them; `/chunked/...` sends them unbuffered,
chunked, in pieces of 1 KiB; `/gzip/...` gzip-encodes JSON answers. A second listener (`impostor_url`)
serves the same names with a certificate of another authority. `status_url` is nginx's stub_status,
on plain HTTP: how many client connections are open.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import pwd
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.procs import Proc, ProcGroup, free_port, wait_until

SERVER_NAMES = ("127.0.0.1", "localhost")
# What nginx logs of each answer, as JSON: which connection carried it, and how it was framed.
_ACCESS_LOG_FORMAT = (
    '{"uri":"$request_uri","status":"$status","request_id":"$http_x_request_id",'
    '"connection":"$connection","connection_requests":"$connection_requests",'
    '"transfer_encoding":"$sent_http_transfer_encoding","content_encoding":"$sent_http_content_encoding",'
    '"content_length":"$sent_http_content_length","body_bytes":"$body_bytes_sent"}'
)


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its key, its self-signed certificate, and that certificate as PEM."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    pem: Path

    def trusted(self) -> ssl.SSLContext:
        """A client's TLS context that trusts this authority only."""
        return ssl.create_default_context(cafile=str(self.pem))


def make_authority(directory: Path, name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = directory / f"{name}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(name, key, cert, pem)


def issue_server_cert(
    authority: Authority, directory: Path, names: tuple[str, ...] = SERVER_NAMES
) -> tuple[Path, Path]:
    """A server certificate for `names` (IP addresses or DNS names) signed by `authority`: the
    paths of its chain (certificate, then the authority's) and of its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    chain = directory / f"server-{authority.name}.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + authority.cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path = directory / f"server-{authority.name}.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return chain, key_path


@dataclass
class Nginx:
    proc: Proc
    prefix: Path
    url: str  # https, the certificate of the authority it was started with
    impostor_url: str  # https, the same names with a certificate of another authority
    status_url: str  # http, stub_status

    def access_log(self) -> list[dict[str, str]]:
        """One entry per answer sent, in the order nginx finished them (`_ACCESS_LOG_FORMAT`)."""
        path = self.prefix / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def open_connections(self) -> int:
        """Client connections open at nginx, the one asking included."""
        text = httpx.get(self.status_url, timeout=2).raise_for_status().text
        return int(text.split("Active connections:", 1)[1].split()[0])


def nginx_conf(
    prefix: Path,
    upstream: str,
    *,
    port: int,
    cert: tuple[Path, Path],
    impostor_port: int,
    impostor_cert: tuple[Path, Path],
    status_port: int,
    keepalive_timeout_s: float,
    keepalive_requests: int,
) -> str:
    """nginx's configuration: everything it writes stays under `prefix`."""
    # run as root (a container's CI), nginx would hand its workers to `nobody`, who cannot enter the
    # private temporary directory that holds the keys and buffers
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    log_format probe escape=json '{_ACCESS_LOG_FORMAT}';
    access_log off;
    keepalive_timeout {round(keepalive_timeout_s * 1000)}ms;
    keepalive_requests {keepalive_requests};
    upstream app {{
        server {upstream};
        keepalive 32;
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert[0]};
        ssl_certificate_key {cert[1]};
        access_log {prefix}/access.log probe;
        location / {{
            proxy_pass http://app;
        }}
        location /chunked/ {{
            proxy_pass http://app/;
            proxy_buffering off;
            proxy_buffer_size 1k;
            chunked_transfer_encoding on;
            # the upstream says how long its answers are, and nginx would pass that on: a body filter
            # (that finds nothing to replace) makes the length unknown, so the answer goes out chunked
            sub_filter_types application/json;
            sub_filter '<never-in-an-answer>' '';
        }}
        location /gzip/ {{
            proxy_pass http://app/;
            gzip on;
            gzip_types application/json;
            gzip_min_length 0;
        }}
    }}
    server {{
        listen 127.0.0.1:{impostor_port} ssl;
        ssl_certificate {impostor_cert[0]};
        ssl_certificate_key {impostor_cert[1]};
        location / {{
            proxy_pass http://app;
        }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        keepalive_timeout 0;
        location = /status {{
            stub_status;
        }}
    }}
}}
"""


def start_nginx(
    group: ProcGroup,
    upstream: str,
    authority: Authority,
    impostor: Authority,
    *,
    keepalive_timeout_s: float = 1.0,
    keepalive_requests: int = 3,
) -> Nginx:
    """nginx in front of `upstream` (host:port, plain HTTP) until `group` stops it; ready when an
    HTTPS request through it reaches the upstream."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")  # not on a user's PATH
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx; .ci/run does)")
    prefix = group.workdir / "nginx"
    prefix.mkdir(exist_ok=True)
    port, impostor_port, status_port = free_port(), free_port(), free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        nginx_conf(
            prefix,
            upstream,
            port=port,
            cert=issue_server_cert(authority, prefix),
            impostor_port=impostor_port,
            impostor_cert=issue_server_cert(impostor, prefix),
            status_port=status_port,
            keepalive_timeout_s=keepalive_timeout_s,
            keepalive_requests=keepalive_requests,
        )
    )
    argv = [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    proc = group.spawn("nginx", argv)
    nginx = Nginx(
        proc,
        prefix,
        url=f"https://127.0.0.1:{port}",
        impostor_url=f"https://127.0.0.1:{impostor_port}",
        status_url=f"http://127.0.0.1:{status_port}/status",
    )
    trusted = authority.trusted()

    def ready() -> bool:
        with httpx.Client(verify=trusted, timeout=2) as client:
            return client.get(f"{nginx.url}/_control/health").status_code == 200

    wait_until(ready, 10, "nginx", proc.popen)
    return nginx
