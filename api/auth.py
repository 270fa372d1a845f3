"""Who is calling: JWT bearer authentication, and the role checks routes declare.

Every route of `/api/v1/llm` and of the OpenAI-compatible `/v1` declares `current_principal` (or
`require_admin`); `/livez` and `/readyz` are open; Prometheus' `/metrics` takes an admin token unless
METRICS_PUBLIC is true (then it is open, for scrapers on the operators' network). Answers, in the
gateway's error shape, with RFC 6750 challenges:

- no Bearer credentials: 401 `authentication_error`, `WWW-Authenticate: Bearer realm="llm-gateway"`;
- a malformed, expired, not yet valid, wrongly signed or wrongly addressed token: 401 with
  `error="invalid_token"`;
- a genuine token whose role claim is missing or unknown, or a user token on an admin route: 403
  `permission_error` with `error="insufficient_scope"`;
- no usable verification key configured: 503 (an operator problem, not the caller's).

With AUTH_ENABLED=false every caller is an anonymous admin (development only; logged at start-up).

Who sees what: the token's `sub` is the caller's tenant. A user addresses only its own tenant's jobs,
requests and batches (`Principal.may_see`; any other id is a 404 like an unknown one) and sees only its
own tenant's figures in `/api/v1/llm/metrics`; an admin addresses and sees every tenant's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from api.jwt_keys import (
    ANONYMOUS_SUBJECT,
    AuthConfigError,
    InvalidToken,
    RoleRefused,
    TokenVerifier,
    WeakSecret,
    build_verifier,
)
from shared.errors import ErrorType, GatewayError
from shared.secrets_file import SecretsSource
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

REALM = "llm-gateway"
_UNSAFE_IN_QUOTES = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="JWT",
    bearerFormat="JWT",
    description="A JWT with a `role` claim of `admin` or `user` (mint one with `gateway-token`).",
)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def tenant_scope(self) -> str | None:
        """The one tenant whose jobs, requests and batches this caller may address by id; None for an
        admin, who may address every tenant's."""
        return None if self.is_admin else self.subject

    def may_see(self, tenant: str | None) -> bool:
        """Whether a resource kept for `tenant` is this caller's to read or change. Routes answer 404
        otherwise, exactly as for an id that does not exist, so that ids are no existence oracle."""
        scope = self.tenant_scope
        return scope is None or tenant == scope


ANONYMOUS = Principal(subject=ANONYMOUS_SUBJECT, role="user")
OPEN_ACCESS = Principal(subject=ANONYMOUS_SUBJECT, role="admin")  # AUTH_ENABLED=false


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    parts = [f'Bearer realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_UNSAFE_IN_QUOTES.sub("?", description)}"')
    return {"WWW-Authenticate": ", ".join(parts)}


def unauthorized(message: str, *, invalid_token: bool = True) -> HTTPException:
    """401 `authentication_error`; `invalid_token=False` when no credentials were sent at all."""
    challenge = _challenge("invalid_token", message) if invalid_token else _challenge()
    return HTTPException(401, detail=message, headers=challenge)


def forbidden(message: str) -> HTTPException:
    """403 `permission_error`: the caller is known but may not do this."""
    return HTTPException(403, detail=message, headers=_challenge("insufficient_scope", message))


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or a 401."""
    if not authorization:
        raise unauthorized("a Bearer token is required (Authorization: Bearer <jwt>)", invalid_token=False)
    parts = authorization.split()
    if not parts or parts[0].lower() != "bearer":
        raise unauthorized("a Bearer token is required (Authorization: Bearer <jwt>)", invalid_token=False)
    if len(parts) != 2:
        raise unauthorized("the Authorization header is malformed")
    return parts[1]


class Authenticator:
    """One per API process: the verifier, rebuilt only when the reloadable secrets change."""

    def __init__(self, settings: Settings, secrets: SecretsSource | None = None) -> None:
        self.settings = settings
        self.secrets = secrets or SecretsSource(settings)
        self._verifier: TokenVerifier | None = None
        self._version = -1
        self._problem = "no JWT key is configured"
        if not settings.auth_enabled:
            log.warning("AUTH_ENABLED=false: every caller is treated as an admin")
        else:
            # a bad configuration shows at start-up, not at the first request
            self.verifier_or_none(at_start=True)

    def verifier_or_none(self, *, at_start: bool = False) -> TokenVerifier | None:
        """The verifier of the current keys. At start-up a secret too short to be safe raises
        WeakSecret (the process must not serve with it); later, a reload that brings one, like any
        unusable key, keeps the previous keys."""
        self.secrets.values()  # re-reads the secrets if they changed (cheap otherwise)
        if self.secrets.version != self._version:
            self._version = self.secrets.version
            try:
                self._verifier = build_verifier(self.settings, self.secrets.values())
            except AuthConfigError as exc:
                if at_start and isinstance(exc, WeakSecret):
                    raise
                self._problem = str(exc)
                keeping = "; keeping the previous keys" if self._verifier else "; every request will be refused"
                log.error("JWT verification keys unusable: %s%s", exc, keeping)
        return self._verifier

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.settings.auth_enabled:
            return OPEN_ACCESS
        token = bearer_token(authorization)
        verifier = self.verifier_or_none()
        if verifier is None:
            raise GatewayError(
                ErrorType.SERVICE_UNAVAILABLE,
                f"the gateway cannot verify tokens: {self._problem}",
                retryable=False,
            )
        try:
            verified = verifier.verify(token)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None
        except RoleRefused as exc:
            raise forbidden(str(exc)) from None
        return Principal(verified.subject, verified.role)


def install_auth(app: FastAPI, settings: Settings) -> Authenticator:
    """Give the app its authenticator (and the reloadable secrets other routes may read)."""
    auth = Authenticator(settings)
    app.state.auth = auth
    return auth


def authenticator_of(app: FastAPI) -> Authenticator:
    auth: Authenticator | None = getattr(app.state, "auth", None)
    if auth is None:  # an app assembled without install_auth still fails closed
        auth = install_auth(app, get_settings())
    return auth


async def current_principal(
    request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer_scheme)
) -> Principal:
    """The dependency of every authenticated route: a verified caller, or a 401/403. The token comes as
    `Authorization: Bearer`, or as `x-api-key` (how Anthropic's clients send a key)."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization is None and "x-api-key" in headers:
        authorization = f"Bearer {headers['x-api-key']}"
    return authenticator_of(request.app).authenticate(authorization)


async def require_admin(principal: Principal = Depends(current_principal)) -> Principal:
    """For admin-only routes (provider test, logs, cache clear): 403 for user tokens."""
    if not principal.is_admin:
        raise forbidden("this operation needs an admin token")
    return principal
