"""JWT authentication against an app with the real auth dependencies and error handlers (no Redis).

Every attack gets a 401 or a 403 in the gateway's error shape, never a 500; the challenges follow
RFC 6750. Also: key kinds (HS256 secret, RS256 PEM, ES256 JWKS by kid), the previous key during a
rotation, the verified-token cache, live reload of the secrets file, and the `gateway-token` command.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api import token_cli
from api.auth import Authenticator, Principal, current_principal, install_auth, require_admin
from api.errors import install_error_handlers
from api.jwt_keys import InvalidToken, WeakSecret, build_verifier
from api.routes import prometheus
from shared import secrets_file
from shared.secrets_file import SecretsSource
from shared.settings import Settings, get_settings

SECRET = "unit-test-secret-0123456789-abcdefghijklmnop"
OTHER_SECRET = "another-secret-0123456789-abcdefghijklmnopq"


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"jwt_secret": SECRET, "provider_keys_file": None, "auth_enabled": True}
    return Settings(_env_file=None, **{**base, **kw})


def app_for(s: Settings, secrets: SecretsSource | None = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    if secrets is None:
        install_auth(app, s)
    else:
        app.state.auth = Authenticator(s, secrets)

    @app.get("/whoami")
    async def whoami(p: Principal = Depends(current_principal)) -> dict[str, str]:
        return {"subject": p.subject, "role": p.role}

    @app.post("/admin")
    async def admin(p: Principal = Depends(require_admin)) -> dict[str, str]:
        return {"subject": p.subject}

    return app


def claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "role": "user", "iat": now, "exp": now + 600, **kw}


def hs(payload: dict[str, Any], key: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, key, algorithm="HS256", headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HS256_HEADER = b64(b'{"alg":"HS256","typ":"JWT"}')


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def forged_hs256(payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 token signed by hand (PyJWT refuses to use a PEM key as an HMAC secret)."""
    signing_input = f"{HS256_HEADER}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def call(client: TestClient, token: str | None = None, path: str = "/whoami", raw: str | None = None) -> Any:
    headers = {"Authorization": raw if raw is not None else f"Bearer {token}"} if (token or raw is not None) else {}
    method = client.post if path == "/admin" else client.get
    return method(path, headers=headers)


def assert_refused(resp: Any, status: int, etype: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    assert body["error"]["type"] == etype
    assert body["error"]["retryable"] is False
    assert resp.headers["www-authenticate"].startswith('Bearer realm="llm-gateway"')


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def hs_client() -> Iterator[TestClient]:
    with TestClient(app_for(settings())) as c:
        yield c


@pytest.fixture(scope="module")
def rs_client(rsa_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("rs") / "public.pem"
    path.write_bytes(pem_public(rsa_key))
    s = settings(jwt_secret=None, jwt_algorithm="RS256", jwt_public_key_file=str(path))
    with TestClient(app_for(s)) as c:
        yield c


# -- accepted --------------------------------------------------------------------------------------


def test_valid_user_and_admin_tokens(hs_client: TestClient) -> None:
    resp = call(hs_client, hs(claims()))
    assert resp.status_code == 200
    assert resp.json() == {"subject": "alice", "role": "user"}
    assert call(hs_client, hs(claims(sub="root", role="admin")), "/admin").json() == {"subject": "root"}


def test_scheme_is_case_insensitive_and_leeway_applies(hs_client: TestClient) -> None:
    assert call(hs_client, raw=f"bearer {hs(claims())}").status_code == 200
    # expired 10 s ago, within the 30 s leeway
    assert call(hs_client, hs(claims(exp=int(time.time()) - 10))).status_code == 200


# -- refused: every attack is a 401 or a 403, never a 500 ------------------------------------------


def _attacks(rsa_key: rsa.RSAPrivateKey) -> dict[str, tuple[str, int]]:
    now = int(time.time())
    user = hs(claims())
    head, body, sig = user.split(".")
    tampered_body = b64(json.dumps(claims(role="admin")).encode())
    return {
        "alg none": (raw_token({"alg": "none", "typ": "JWT"}, claims(role="admin")), 401),
        "alg None with a signature": (raw_token({"alg": "None"}, claims(role="admin"), b"x"), 401),
        "RS256 token on an HS256 gateway": (jwt.encode(claims(), rsa_key, algorithm="RS256"), 401),
        "HS384 token": (jwt.encode(claims(), SECRET + "-longer-for-hs384-0123456789", algorithm="HS384"), 401),
        "expired": (hs(claims(exp=now - 120)), 401),
        "not yet valid (nbf)": (hs(claims(nbf=now + 600)), 401),
        "issued in the future (iat)": (hs(claims(iat=now + 600)), 401),
        "no exp": (hs({"sub": "alice", "role": "user"}), 401),
        "wrong signature": (hs(claims(), OTHER_SECRET), 401),
        "tampered claims": (f"{head}.{tampered_body}.{sig}", 401),
        "signature stripped": (f"{head}.{body}.", 401),
        "not a jwt": ("not-a-jwt", 401),
        "two segments": (f"{head}.{body}", 401),
        "garbage segments": ("a.b.c", 401),
        "header not json": (f"{b64(b'{oops')}.{body}.{sig}", 401),
        "payload not an object": (hs_raw_payload(b"[1,2]"), 401),
        "oversized token": ("a" * 20_000 + "." + body + "." + sig, 401),
        "missing role": (hs({k: v for k, v in claims().items() if k != "role"}), 403),
        "unknown role": (hs(claims(role="superuser")), 403),
        "role as a list": (hs(claims(role=["admin"])), 403),
        "non-string sub": (hs(claims(sub=42)), 401),
        "no sub": (hs({k: v for k, v in claims().items() if k != "sub"}), 401),
        "empty sub": (hs(claims(sub="")), 401),
    }


def hs_raw_payload(payload: bytes) -> str:
    signing_input = f"{HS256_HEADER}.{b64(payload)}"
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


@pytest.mark.parametrize(
    "name",
    [
        "alg none",
        "alg None with a signature",
        "RS256 token on an HS256 gateway",
        "HS384 token",
        "expired",
        "not yet valid (nbf)",
        "issued in the future (iat)",
        "no exp",
        "wrong signature",
        "tampered claims",
        "signature stripped",
        "not a jwt",
        "two segments",
        "garbage segments",
        "header not json",
        "payload not an object",
        "oversized token",
        "missing role",
        "unknown role",
        "role as a list",
        "non-string sub",
        "no sub",
        "empty sub",
    ],
)
def test_attack_is_refused(name: str, hs_client: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    token, status = _attacks(rsa_key)[name]
    for path in ("/whoami", "/admin"):
        resp = call(hs_client, token, path)
        assert_refused(resp, status, "authentication_error" if status == 401 else "permission_error")
        expected = 'error="invalid_token"' if status == 401 else 'error="insufficient_scope"'
        assert expected in resp.headers["www-authenticate"]


def test_expired_token_says_so(hs_client: TestClient) -> None:
    resp = call(hs_client, hs(claims(exp=int(time.time()) - 120)))
    assert resp.json()["error"]["message"] == "the token has expired"


@pytest.mark.parametrize(
    "header",
    ["", "Basic dXNlcjpwYXNz", "Token abc", "Bearer", "Bearer ", "Bearer a b", "Bearer\tabc def"],
)
def test_malformed_or_missing_authorization_header(header: str, hs_client: TestClient) -> None:
    resp = call(hs_client, raw=header) if header else hs_client.get("/whoami")
    assert_refused(resp, 401, "authentication_error")
    bearer_sent = header.lower().startswith("bearer")
    # RFC 6750 §3.1: no error code when the request carried no bearer credentials at all
    assert ('error="invalid_token"' in resp.headers["www-authenticate"]) is bearer_sent


def test_user_token_is_refused_on_admin_routes(hs_client: TestClient) -> None:
    resp = call(hs_client, hs(claims(role="user")), "/admin")
    assert_refused(resp, 403, "permission_error")
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]


def test_attacker_controlled_alg_cannot_inject_into_the_challenge(hs_client: TestClient) -> None:
    token = raw_token({"alg": 'x", error="none\\'}, claims())
    resp = call(hs_client, token)
    assert_refused(resp, 401, "authentication_error")
    challenge = resp.headers["www-authenticate"]
    assert challenge.count('"') == 6  # realm, error, error_description: nothing else got quoted in


# -- asymmetric keys ------------------------------------------------------------------------------


def test_rs256_pem_accepts_its_tokens_and_refuses_hs_confusion(rs_client: TestClient, rsa_key: Any) -> None:
    assert call(rs_client, jwt.encode(claims(), rsa_key, algorithm="RS256")).status_code == 200
    # the classic confusion: HS256 "signed" with the server's public key as the HMAC secret
    forged = forged_hs256(claims(role="admin"), pem_public(rsa_key))
    assert_refused(call(rs_client, forged, "/admin"), 401, "authentication_error")
    assert_refused(call(rs_client, hs(claims())), 401, "authentication_error")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_refused(call(rs_client, jwt.encode(claims(), other, algorithm="RS256")), 401, "authentication_error")


def test_es256_jwks_picks_the_key_by_kid(tmp_path: Path, ec_key: Any, rsa_key: Any) -> None:
    second = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "k1", "use": "sig"},
            {**json.loads(ECAlgorithm.to_jwk(second.public_key())), "kid": "k2", "alg": "ES256"},
            {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa"},  # other family: ignored
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    s = settings(jwt_secret=None, jwt_algorithm="ES256", jwt_jwks_file=str(path))
    with TestClient(app_for(s)) as client:
        ok1 = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "k1"})
        ok2 = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k2"})
        assert call(client, ok1).status_code == call(client, ok2).status_code == 200
        swapped = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "k2"})
        unknown = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "nope"})
        no_kid = jwt.encode(claims(), ec_key, algorithm="ES256")
        rs = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa"})
        for token in (swapped, unknown, no_kid, rs):
            assert_refused(call(client, token), 401, "authentication_error")


# -- audience, issuer ------------------------------------------------------------------------------


def test_audience_and_issuer_are_checked_when_configured() -> None:
    with TestClient(app_for(settings(jwt_audience="llm-gateway", jwt_issuer="https://idp.example"))) as client:
        good = hs(claims(aud="llm-gateway", iss="https://idp.example"))
        assert call(client, good).status_code == 200
        for bad in (
            hs(claims(aud="another-service", iss="https://idp.example")),
            hs(claims(iss="https://idp.example")),
            hs(claims(aud="llm-gateway", iss="https://evil.example")),
            hs(claims(aud="llm-gateway")),
        ):
            assert_refused(call(client, bad), 401, "authentication_error")
    resp = call(TestClient(app_for(settings(jwt_audience="llm-gateway"))), hs(claims(aud="another-service")))
    assert resp.json()["error"]["message"] == "the token is meant for another audience"


def test_audience_is_ignored_when_not_configured(hs_client: TestClient) -> None:
    assert call(hs_client, hs(claims(aud="anything"))).status_code == 200


# -- configuration, rotation, cache -----------------------------------------------------------------


def test_no_key_configured_is_a_503_not_a_401() -> None:
    with TestClient(app_for(settings(jwt_secret=None))) as client:
        resp = call(client, hs(claims()))
        assert resp.status_code == 503
        assert resp.json()["error"]["type"] == "service_unavailable"
        assert_refused(client.get("/whoami"), 401, "authentication_error")  # still: no token, no entry


def test_auth_disabled_lets_everyone_in_as_admin() -> None:
    with TestClient(app_for(settings(auth_enabled=False, jwt_secret=None))) as client:
        assert client.post("/admin").status_code == 200


def test_previous_secret_is_accepted_during_rotation() -> None:
    with TestClient(app_for(settings(jwt_secret=OTHER_SECRET, jwt_previous_secret=SECRET))) as client:
        assert call(client, hs(claims(), SECRET)).status_code == 200
        assert call(client, hs(claims(), OTHER_SECRET)).status_code == 200
        assert_refused(call(client, hs(claims(), SECRET + "x")), 401, "authentication_error")


def test_previous_public_key_is_accepted_during_rotation(tmp_path: Path, rsa_key: Any) -> None:
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "new.pem").write_bytes(pem_public(new))
    (tmp_path / "old.pem").write_bytes(pem_public(rsa_key))
    s = settings(
        jwt_secret=None,
        jwt_algorithm="RS256",
        jwt_public_key_file=str(tmp_path / "new.pem"),
        jwt_previous_public_key_file=str(tmp_path / "old.pem"),
    )
    with TestClient(app_for(s)) as client:
        assert call(client, jwt.encode(claims(), rsa_key, algorithm="RS256")).status_code == 200
        assert call(client, jwt.encode(claims(), new, algorithm="RS256")).status_code == 200


def test_verified_tokens_are_cached_until_they_expire() -> None:
    s = settings(jwt_leeway_s=0)
    verifier = build_verifier(s, SecretsSource(s).values())
    token = hs(claims(exp=int(time.time()) + 1))
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # served from the cache
    deadline = first.expires + 0.05
    while time.time() < deadline:
        time.sleep(0.05)  # a wall-clock expiry is the behaviour under test
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a new inode: the change is seen whatever the mtime granularity


def test_secrets_file_rotation_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    _write(secrets, f"JWT_SECRET={SECRET}\n")
    now = [0.0]
    s = settings(jwt_secret=None, provider_keys_file=str(secrets), provider_keys_poll_s=2.0)
    app = app_for(s, SecretsSource(s, clock=lambda: now[0]))
    with TestClient(app) as client:
        assert call(client, hs(claims(), SECRET)).status_code == 200
        _write(secrets, f"JWT_SECRET={OTHER_SECRET}\nJWT_PREVIOUS_SECRET={SECRET}\n")
        assert call(client, hs(claims(), OTHER_SECRET)).status_code == 401  # not re-read before the poll
        now[0] += 2.0
        assert call(client, hs(claims(), OTHER_SECRET)).status_code == 200
        assert call(client, hs(claims(), SECRET)).status_code == 200
        _write(secrets, f"JWT_SECRET={OTHER_SECRET}\nJWT_PREVIOUS_SECRET=\n")
        now[0] += 2.0
        assert call(client, hs(claims(), SECRET)).status_code == 401
        assert call(client, hs(claims(), OTHER_SECRET)).status_code == 200


def test_sighup_rereads_the_secrets_at_once(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    _write(secrets, "OPENAI_API_KEY=sk-one\n")
    source = SecretsSource(settings(provider_keys_file=str(secrets), provider_keys_poll_s=3600))
    assert source.api_keys("openai") == ["sk-one"]
    _write(secrets, "OPENAI_API_KEY=sk-two, sk-three\nOPENAI_API_KEYS=sk-four\n")
    assert source.api_keys("openai") == ["sk-one"]
    seen = secrets_file.hangups()
    os.kill(os.getpid(), signal.SIGHUP)
    deadline = time.monotonic() + 5
    while secrets_file.hangups() == seen and time.monotonic() < deadline:
        time.sleep(0.01)  # the Python-level handler runs between bytecodes of the main thread
    assert source.api_keys("openai") == ["sk-two", "sk-three", "sk-four"]


def test_unreadable_secrets_file_keeps_the_current_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    _write(secrets, "ANTHROPIC_API_KEY=sk-ant-1\n")
    now = [0.0]
    source = SecretsSource(settings(provider_keys_file=str(secrets)), clock=lambda: now[0])
    secrets.unlink()
    now[0] += 5
    assert source.api_keys("anthropic") == ["sk-ant-1"]


def test_environment_key_lists_and_file_override(tmp_path: Path) -> None:
    s = settings(openai_api_key="sk-a, sk-b,,sk-a", openai_api_keys="sk-c")
    assert s.api_keys("openai") == ["sk-a", "sk-b", "sk-c"]
    assert s.api_key("openai") == "sk-a"
    secrets = tmp_path / "secrets.env"
    _write(secrets, "# rotation\nOPENAI_API_KEY='sk-new'\nUNRELATED=1\n")
    source = SecretsSource(settings(openai_api_key="sk-a", openai_api_keys="sk-c", provider_keys_file=str(secrets)))
    assert source.api_keys("openai") == ["sk-new", "sk-c"]
    assert "UNRELATED" not in source.values()


# -- gateway-token ---------------------------------------------------------------------------------


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    def set_env(**env: str) -> None:
        for name in ("JWT_SECRET", "JWT_ALGORITHM", "JWT_PRIVATE_KEY_FILE", "JWT_AUDIENCE", "JWT_ISSUER"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("PROVIDER_KEYS_FILE", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()


@pytest.mark.parametrize(("ttl", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800), ("90", 90)])
def test_token_cli_ttl(ttl: str, seconds: int) -> None:
    assert token_cli.parse_ttl(ttl) == seconds


def test_token_cli_mints_a_token_the_gateway_accepts(
    token_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    token_env(JWT_SECRET=SECRET, JWT_AUDIENCE="llm-gateway", JWT_ISSUER="ops")
    assert token_cli.main(["--sub", "alice", "--role", "admin", "--ttl", "15m"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # only the token
    token = out.strip()
    s = settings(jwt_audience="llm-gateway", jwt_issuer="ops")
    verified = build_verifier(s, SecretsSource(s).values()).verify(token)
    assert (verified.subject, verified.role) == ("alice", "admin")
    assert 899 <= verified.expires - time.time() <= 900
    with TestClient(app_for(s)) as client:
        assert call(client, token, "/admin").status_code == 200


def test_token_cli_signs_rs256_with_the_private_key_file(
    token_env: Callable[..., None], capsys: pytest.CaptureFixture[str], tmp_path: Path, rsa_key: Any
) -> None:
    (tmp_path / "private.pem").write_bytes(pem_private(rsa_key))
    (tmp_path / "public.pem").write_bytes(pem_public(rsa_key))
    token_env(JWT_ALGORITHM="RS256", JWT_PRIVATE_KEY_FILE=str(tmp_path / "private.pem"))
    assert token_cli.main(["--sub", "svc", "--kid", "k1"]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    s = settings(jwt_secret=None, jwt_algorithm="RS256", jwt_public_key_file=str(tmp_path / "public.pem"))
    with TestClient(app_for(s)) as client:
        assert call(client, token).json() == {"subject": "svc", "role": "user"}


def test_token_cli_without_a_key_fails_cleanly(
    token_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    token_env(JWT_ALGORITHM="ES256")
    assert token_cli.main(["--sub", "x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "JWT_PRIVATE_KEY_FILE" in captured.err


def test_verified_token_cache_is_bounded() -> None:
    s = settings(jwt_verified_cache_size=2)
    verifier = build_verifier(s, SecretsSource(s).values())
    tokens = [hs(claims(sub=f"user-{i}")) for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._cache) == 2
    assert [verifier.verify(t).subject for t in tokens] == [f"user-{i}" for i in range(5)]


# -- tenants need subjects, HS256 needs long secrets ------------------------------------------------


def test_a_token_without_sub_is_refused_saying_why(hs_client: TestClient) -> None:
    resp = call(hs_client, hs({k: v for k, v in claims(role="admin").items() if k != "sub"}))
    assert_refused(resp, 401, "authentication_error")
    assert "'sub'" in resp.json()["error"]["message"]


def test_tokens_without_sub_share_the_anonymous_tenant_when_allowed() -> None:
    with TestClient(app_for(settings(jwt_allow_anonymous=True))) as client:
        resp = call(client, hs({k: v for k, v in claims().items() if k != "sub"}))
        assert resp.json() == {"subject": "anonymous", "role": "user"}


SHORT = "s" * 31  # one byte short of RFC 7518's 256 bits


@pytest.mark.parametrize("name", ["jwt_secret", "jwt_previous_secret"])
def test_a_short_hs256_secret_stops_start_up_naming_it(name: str) -> None:
    with pytest.raises(WeakSecret) as refused:
        install_auth(FastAPI(), settings(**{name: SHORT}))
    assert name.upper() in str(refused.value) and "at least 32 bytes" in str(refused.value)
    install_auth(FastAPI(), settings(**{name: SHORT + "s"}))  # 32 bytes will do


def test_a_short_secret_in_the_secrets_file_stops_start_up_too(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    _write(secrets, "JWT_SECRET=tiny\n")
    with pytest.raises(WeakSecret, match="JWT_SECRET is too short"):
        install_auth(FastAPI(), settings(jwt_secret=None, provider_keys_file=str(secrets)))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_reload_bringing_a_short_secret_keeps_the_previous_keys(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    _write(secrets, f"JWT_SECRET={SECRET}\n")
    now = [0.0]
    s = settings(jwt_secret=None, provider_keys_file=str(secrets), provider_keys_poll_s=1.0)
    with TestClient(app_for(s, SecretsSource(s, clock=lambda: now[0]))) as client:
        _write(secrets, f"JWT_SECRET={SHORT}\n")
        now[0] += 1.0
        assert call(client, hs(claims(), SECRET)).status_code == 200
        assert call(client, hs(claims(), SHORT)).status_code == 401


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # PyJWT's own, signing with SHORT
def test_token_cli_refuses_to_sign_with_a_short_secret(
    token_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    token_env(JWT_SECRET=SHORT)
    assert token_cli.main(["--sub", "x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "JWT_SECRET is too short (31 bytes)" in captured.err


def test_prometheus_metrics_behind_auth_want_an_admin_token() -> None:
    """With METRICS_PUBLIC=false, the operators' view of every tenant's totals is not a user's to read."""
    app = app_for(settings())
    app.include_router(prometheus.build_router(public=False))
    with TestClient(app) as client:
        assert_refused(call(client, hs(claims()), "/metrics"), 403, "permission_error")
        assert call(client, None, "/metrics").status_code == 401
