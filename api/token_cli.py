"""Mint a token the gateway accepts: `gateway-token --sub alice --role admin --ttl 1h`.

Prints only the token on stdout. Signs with JWT_SECRET for HS256 and with the PEM private key of
JWT_PRIVATE_KEY_FILE for RS256/ES256 (JWT_ALGORITHM), reading PROVIDER_KEYS_FILE like the gateway
does; the audience and issuer default to JWT_AUDIENCE and JWT_ISSUER.
"""

from __future__ import annotations

import argparse
import re
import sys

from api.jwt_keys import ROLES, AuthConfigError, mint, signing_key
from shared.secrets_file import SecretsSource
from shared.settings import get_settings

_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """`30s`, `15m`, `1h`, `7d` (or plain seconds) -> seconds."""
    match = _TTL.match(text.lower())
    if match is None or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid ttl {text!r}: use a positive number with s, m, h or d (e.g. 1h)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="gateway-token", description=__doc__.splitlines()[0])
    parser.add_argument("--sub", required=True, help="the subject: who the token is for")
    parser.add_argument("--role", choices=sorted(ROLES), default="user", help="default: user")
    parser.add_argument("--ttl", type=parse_ttl, default="1h", help="lifetime: 30s, 15m, 1h, 7d (default 1h)")
    parser.add_argument("--aud", default=settings.jwt_audience, help="audience (default: JWT_AUDIENCE)")
    parser.add_argument("--iss", default=settings.jwt_issuer, help="issuer (default: JWT_ISSUER)")
    parser.add_argument("--kid", default=None, help="key id header, to pick a key out of a JWKS")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    try:
        key = signing_key(settings.jwt_algorithm, SecretsSource(settings).values())
    except AuthConfigError as exc:
        print(f"gateway-token: cannot sign {settings.jwt_algorithm} tokens: {exc}", file=sys.stderr)
        return 1
    token = mint(
        settings.jwt_algorithm,
        key,
        subject=args.sub,
        role=args.role,
        ttl_s=args.ttl,
        role_claim=settings.jwt_role_claim,
        audience=args.aud,
        issuer=args.iss,
        kid=args.kid,
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
