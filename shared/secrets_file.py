"""Secrets that change without a restart: provider keys and JWT keys, from the environment and a file.

`PROVIDER_KEYS_FILE` is a dotenv-style file with the environment's own names (`OPENAI_API_KEY=...`,
`JWT_SECRET=...`); a name set there overrides the environment, a name left out falls back to it.
The file (and the JWT key files it or the environment names) is re-read when its mtime, size or inode
changes, checked at most every `PROVIDER_KEYS_POLL_S` on access (one stat, no background task), and
at the next access after a SIGHUP.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from dotenv import dotenv_values
from pydantic import SecretStr

from shared.settings import Settings, split_keys

log = logging.getLogger(__name__)

# name -> the Settings attribute holding its environment value
RELOADABLE: dict[str, str] = {
    "OPENAI_API_KEY": "openai_api_key",
    "OPENAI_API_KEYS": "openai_api_keys",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "ANTHROPIC_API_KEYS": "anthropic_api_keys",
    "JWT_SECRET": "jwt_secret",
    "JWT_PREVIOUS_SECRET": "jwt_previous_secret",
    "JWT_PUBLIC_KEY_FILE": "jwt_public_key_file",
    "JWT_PREVIOUS_PUBLIC_KEY_FILE": "jwt_previous_public_key_file",
    "JWT_JWKS_FILE": "jwt_jwks_file",
    "JWT_PRIVATE_KEY_FILE": "jwt_private_key_file",
}
KEY_FILE_NAMES = ("JWT_PUBLIC_KEY_FILE", "JWT_PREVIOUS_PUBLIC_KEY_FILE", "JWT_JWKS_FILE")

_hangups = 0
_installed = False
_install_lock = threading.Lock()


def _on_sighup(previous: Any) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        global _hangups
        _hangups += 1  # the reload itself happens at the next access, outside the signal handler
        if callable(previous):
            previous(signum, frame)

    return handler


def install_sighup() -> bool:
    """Make SIGHUP mean "re-read the secrets" in this process (once; main thread only)."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
            return False
        signal.signal(signal.SIGHUP, _on_sighup(signal.getsignal(signal.SIGHUP)))
        _installed = True
        return True


def hangups() -> int:
    """SIGHUPs received so far by this process."""
    return _hangups


def read_secrets_file(path: str) -> dict[str, str]:
    """The reloadable names a dotenv file sets (an empty value unsets a name). Raises OSError."""
    with open(path, encoding="utf-8") as fh:
        parsed = dotenv_values(stream=fh, interpolate=False)
    return {name: value or "" for name, value in parsed.items() if name in RELOADABLE and value is not None}


def _env_values(settings: Settings) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, attr in RELOADABLE.items():
        value = getattr(settings, attr)
        if value is not None:
            out[name] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return out


Stamp = tuple[tuple[str, int, int, int] | tuple[str], ...]


def _stamp(paths: list[str]) -> Stamp:
    out: list[tuple[str, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path,))
        else:
            out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class SecretsSource:
    """The current secrets of this process. `values()` is cheap: call it on every use.

    `version` goes up on every reload, so holders of derived state (parsed keys, a JWT verifier)
    rebuild it only when something may have changed.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = settings.provider_keys_file
        self.poll_s = settings.provider_keys_poll_s
        self.clock = clock
        self.version = 0
        self._env = _env_values(settings)
        self._values: dict[str, str] = dict(self._env)
        self._file: dict[str, str] = {}
        self._stamp: Stamp = ()
        self._next_check = 0.0
        self._hangups = hangups()
        install_sighup()
        self._reload(self._watched_paths(self._values), initial=True)

    def values(self) -> Mapping[str, str]:
        now = self.clock()
        if now >= self._next_check or self._hangups != _hangups:
            self._next_check = now + self.poll_s
            self.check()
        return self._values

    def get(self, name: str) -> str | None:
        return self.values().get(name) or None

    def api_keys(self, provider: str) -> list[str]:
        """The provider's keys in the order they are tried (`<P>_API_KEY` list, then `<P>_API_KEYS`)."""
        values = self.values()
        prefix = provider.upper()
        return split_keys(values.get(f"{prefix}_API_KEY"), values.get(f"{prefix}_API_KEYS"))

    def check(self) -> bool:
        """Re-read what changed on disk (or everything after a SIGHUP). True if a reload happened."""
        hup = self._hangups != _hangups
        self._hangups = _hangups
        paths = self._watched_paths(self._values)
        if not hup and _stamp(paths) == self._stamp:
            return False
        self._reload(paths, initial=False)
        return True

    def _watched_paths(self, values: Mapping[str, str]) -> list[str]:
        paths = [self.path] if self.path else []
        return paths + [values[n] for n in KEY_FILE_NAMES if values.get(n)]

    def _reload(self, paths: list[str], *, initial: bool) -> None:
        file_before = _stamp(paths[:1]) if self.path else ()
        if self.path:
            try:
                self._file = read_secrets_file(self.path)
            except (OSError, UnicodeDecodeError) as exc:
                # keep what we had: a file being replaced must not take the keys away
                log.warning("secrets file unreadable (%s); keeping the current secrets", type(exc).__name__)
        values = {**self._env, **self._file}
        stamp = _stamp(self._watched_paths(values))
        # a file that changed while it was read is read again at the next check
        self._stamp = stamp if stamp[: len(file_before)] == file_before else ()
        self._values = values
        self.version += 1
        if not initial:
            log.info("secrets reloaded from %s", self.path or "the JWT key files")
