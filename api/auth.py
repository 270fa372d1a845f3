"""Who is calling. The dependency every route declares; JWT verification plugs in here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS = Principal(subject="anonymous", role="user")


async def current_principal() -> Principal:
    return ANONYMOUS
