"""JWT verification with pinned algorithms and parsed-once keys, and the signing side for minting tokens.

HS256 verifies with `JWT_SECRET` (and `JWT_PREVIOUS_SECRET` while a rotation is under way); RS256 and
ES256 with the PEM public keys of `JWT_PUBLIC_KEY_FILE` / `JWT_PREVIOUS_PUBLIC_KEY_FILE` and the keys
of `JWT_JWKS_FILE`, chosen by the token's `kid`. Only the configured algorithm is accepted, so neither
`none` nor an HS256 token signed with a public key as its secret can pass.

`exp` is required; `nbf` and `iat` are checked when present, `aud` and `iss` when configured, all with
`JWT_LEEWAY_S`. `sub` names the caller's tenant: a token without one is refused with 401 unless
`JWT_ALLOW_ANONYMOUS` lets it in as the one shared tenant `anonymous`. The role claim must be `admin`
or `user`: a verified token without one is refused with 403 (the caller is known, but may do nothing).

Every HS256 secret (`JWT_SECRET`, `JWT_PREVIOUS_SECRET`, from the environment or the secrets file) must
be at least 32 bytes: RFC 7518 §3.2 asks for a key as long as the hash, 256 bits; a shorter one can be
brute-forced from any token it signed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import get_default_algorithms

from shared.settings import Settings

ROLES = frozenset({"admin", "user"})
MAX_TOKEN_CHARS = 16 * 1024
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 §3.2: at least the size of the hash output, 256 bits
ANONYMOUS_SUBJECT = "anonymous"
_ANY_KID = None


class InvalidToken(Exception):
    """401: no identity can be established from the token."""


class RoleRefused(Exception):
    """403: the token is genuine but carries no role the gateway knows."""


class AuthConfigError(Exception):
    """The gateway cannot verify (or sign) tokens as configured."""


class WeakSecret(AuthConfigError):
    """An HS256 secret too short to be safe: the API refuses to start with one."""


def hs256_secret(name: str, value: str) -> str:
    """`value`, the HS256 secret named `name`, if it is long enough; WeakSecret otherwise."""
    size = len(value.encode())
    if size < MIN_HS256_SECRET_BYTES:
        raise WeakSecret(
            f"{name} is too short ({size} bytes): an HS256 secret needs at least {MIN_HS256_SECRET_BYTES} bytes"
            " (256 bits, RFC 7518 section 3.2); make one with"
            " python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str
    role: str
    expires: float


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None  # None: tried for any kid
    key: Any  # ready for PyJWT: bytes for HMAC, a cryptography public key, or a PyJWK


_MESSAGES: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is meant for another audience"),
    (jwt.InvalidIssuerError, "the token's issuer is not accepted"),
    (jwt.InvalidSignatureError, "the token's signature is invalid"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
    (jwt.DecodeError, "the token is malformed"),
]


def _explain(exc: Exception) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no '{exc.claim}' claim"
    for kind, message in _MESSAGES:
        if isinstance(exc, kind):
            return message
    return "the token is invalid"


class TokenVerifier:
    """Verifies bearer tokens; remembers verified ones (by their exact text) until they expire."""

    def __init__(
        self,
        *,
        algorithm: str,
        keys: list[_Key],
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 30.0,
        role_claim: str = "role",
        cache_size: int = 4096,
        allow_anonymous: bool = False,
    ) -> None:
        if not keys:
            raise AuthConfigError(f"no key to verify {algorithm} tokens with")
        self.algorithm = algorithm
        self.keys = keys
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.role_claim = role_claim
        self.cache_size = cache_size
        self.allow_anonymous = allow_anonymous
        self._cache: dict[str, VerifiedToken] = {}
        self._jwt = jwt.PyJWT({"require": ["exp"], "verify_aud": audience is not None})

    def verify(self, token: str) -> VerifiedToken:
        hit = self._cache.get(token)
        if hit is not None:
            if time.time() < hit.expires + self.leeway_s:
                return hit
            del self._cache[token]
        verified = self._verify(token)
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            self._cache[token] = verified
        return verified

    def _verify(self, token: str) -> VerifiedToken:
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken("the token is malformed") from exc
        alg = header.get("alg")
        if alg != self.algorithm:  # pinned: never `none`, never another family's algorithm
            raise InvalidToken(f"the token's algorithm {str(alg)[:16]!r} is not accepted")
        kid = header.get("kid")
        candidates = [k for k in self.keys if kid is not None and k.kid == kid] or [
            k for k in self.keys if k.kid is _ANY_KID
        ]
        if not candidates:
            raise InvalidToken("the token's key id is not known")
        claims: dict[str, Any] | None = None
        last: Exception = jwt.InvalidSignatureError()
        for candidate in candidates:  # current key first, then the previous one
            try:
                claims = self._jwt.decode(
                    token,
                    candidate.key,
                    algorithms=[self.algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                )
                break
            except jwt.InvalidSignatureError as exc:
                last = exc
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise InvalidToken(_explain(exc)) from exc
        if claims is None:
            raise InvalidToken(_explain(last))
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            # the subject is the tenant: without one, every such caller would share one tenant's jobs
            if not self.allow_anonymous:
                raise InvalidToken("the token has no 'sub' claim: it must name its subject (the caller's tenant)")
            sub = ANONYMOUS_SUBJECT
        role = claims.get(self.role_claim)
        if not isinstance(role, str) or role not in ROLES:
            raise RoleRefused(f"the token's '{self.role_claim}' claim must be 'admin' or 'user'")
        return VerifiedToken(subject=sub, role=role, expires=float(claims["exp"]))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise AuthConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from exc


def _public_key(algorithm: str, pem: bytes, origin: str) -> Any:
    try:
        key = get_default_algorithms()[algorithm].prepare_key(pem)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise AuthConfigError(f"{origin} holds no usable {algorithm} key") from exc
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        key = key.public_key()
    _check_family(algorithm, key, origin)
    return key


def _check_family(algorithm: str, key: Any, origin: str) -> None:
    ok = (
        isinstance(key, rsa.RSAPublicKey)
        if algorithm == "RS256"
        else isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    )
    if not ok:
        raise AuthConfigError(f"{origin} does not hold an {algorithm} public key")


def _jwks_keys(algorithm: str, path: str) -> list[_Key]:
    try:
        data = json.loads(_read(path))
        jwk_set = jwt.PyJWKSet.from_dict(data if isinstance(data, dict) else {})
    except (ValueError, jwt.PyJWTError) as exc:
        raise AuthConfigError(f"{path} is not a usable JWKS") from exc
    keys: list[_Key] = []
    for jwk in jwk_set.keys:
        if jwk.algorithm_name != algorithm or jwk.public_key_use not in (None, "sig"):
            continue
        _check_family(algorithm, jwk.key, path)
        keys.append(_Key(jwk.key_id, jwk))
    return keys


def verification_keys(algorithm: str, values: Mapping[str, str]) -> list[_Key]:
    """The keys tokens may be signed with, current first, from the (reloadable) secrets."""
    if algorithm == "HS256":
        hmac = get_default_algorithms()["HS256"]
        keys = []
        for name in ("JWT_SECRET", "JWT_PREVIOUS_SECRET"):
            if values.get(name):
                try:
                    keys.append(_Key(_ANY_KID, hmac.prepare_key(hs256_secret(name, values[name]))))
                except jwt.PyJWTError as exc:
                    raise AuthConfigError(f"{name} is not usable as an HS256 secret") from exc
        return keys
    keys = []
    if values.get("JWT_JWKS_FILE"):
        keys += _jwks_keys(algorithm, values["JWT_JWKS_FILE"])
    for name in ("JWT_PUBLIC_KEY_FILE", "JWT_PREVIOUS_PUBLIC_KEY_FILE"):
        if values.get(name):
            keys.append(_Key(_ANY_KID, _public_key(algorithm, _read(values[name]), name)))
    return keys


def build_verifier(settings: Settings, values: Mapping[str, str]) -> TokenVerifier:
    """Raises AuthConfigError when no usable key is configured for JWT_ALGORITHM."""
    return TokenVerifier(
        algorithm=settings.jwt_algorithm,
        keys=verification_keys(settings.jwt_algorithm, values),
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_s=settings.jwt_leeway_s,
        role_claim=settings.jwt_role_claim,
        cache_size=settings.jwt_verified_cache_size,
        allow_anonymous=settings.jwt_allow_anonymous,
    )


def signing_key(algorithm: str, values: Mapping[str, str]) -> Any:
    """What tokens are signed with: JWT_SECRET for HS256, JWT_PRIVATE_KEY_FILE's key otherwise."""
    if algorithm == "HS256":
        if not values.get("JWT_SECRET"):
            raise AuthConfigError("JWT_SECRET is not set")
        return hs256_secret("JWT_SECRET", values["JWT_SECRET"])
    path = values.get("JWT_PRIVATE_KEY_FILE")
    if not path:
        raise AuthConfigError(f"JWT_PRIVATE_KEY_FILE is not set (needed to sign {algorithm} tokens)")
    try:
        key = load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise AuthConfigError(f"{path} holds no unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise AuthConfigError(f"{path} holds no RSA or EC private key")
    _check_family(algorithm, key.public_key(), path)
    return key


def mint(
    algorithm: str,
    key: Any,
    *,
    subject: str,
    role: str,
    ttl_s: float,
    role_claim: str = "role",
    audience: str | None = None,
    issuer: str | None = None,
    kid: str | None = None,
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": subject, role_claim: role, "iat": issued, "exp": issued + int(ttl_s)}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)
