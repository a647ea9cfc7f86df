"""API keys: ``Authorization: Bearer <key>``, scopes, and the refusal to expose an open API.

Keys are held only as SHA-256 digests (from the config, or hashed from an environment
variable at start-up); a key never appears in a log line or an error. With no keys
configured the API is open — and then only a loopback bind is allowed
(:func:`check_exposure`). A key with scope ``admin`` may do everything.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request

from headwater.config.model import Settings
from headwater.config.serving import SCOPES, AuthConfig, Scope
from headwater.errors import ConfigError

KEY_PREFIX = "hw_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, its scopes and its tenant (cache scope)."""

    name: str
    scopes: frozenset[str]
    tenant: str

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Principal("anonymous", frozenset(SCOPES), "default")
"""The caller when no keys are configured (loopback only)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and its SHA-256 (the hash goes in headwater.toml)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


class KeyRing:
    """The configured keys, by digest."""

    def __init__(self, keys: Mapping[str, Principal]) -> None:
        self._keys = dict(keys)

    @property
    def open(self) -> bool:
        """True when no key is configured: every caller is :data:`ANONYMOUS`."""
        return not self._keys

    @classmethod
    def from_config(cls, cfg: AuthConfig, environ: Mapping[str, str] | None = None) -> KeyRing:
        """Raises ConfigError: a key's environment variable is unset or empty."""
        env = os.environ if environ is None else environ
        keys: dict[str, Principal] = {}
        for k in cfg.keys:
            if k.env is not None:
                raw = env.get(k.env, "")
                if not raw:
                    raise ConfigError(
                        f"serving.auth.keys: key {k.name!r} reads environment variable"
                        f" {k.env}, which is not set; export it or list the key by sha256"
                    )
                digest = hash_key(raw)
            else:
                assert k.sha256 is not None
                digest = k.sha256
            keys[digest] = Principal(k.name, frozenset(k.scopes), k.tenant)
        return cls(keys)

    def authorize(self, authorization: str | None, scope: Scope) -> Principal:
        """The caller of a request needing ``scope``.

        Raises:
            HTTPException: 401 without a valid bearer key, 403 when it lacks ``scope``.
        """
        if self.open:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                "missing API key: send the header 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        who = self._keys.get(hash_key(token.strip()))
        if who is None:
            raise HTTPException(
                401, "unknown API key", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        if not who.may(scope):
            raise HTTPException(
                403, f"API key {who.name!r} lacks scope {scope!r} (it has {sorted(who.scopes)})"
            )
        return who


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(settings: Settings, ring: KeyRing | None = None) -> None:
    """Refuse an open API on a non-loopback address.

    Raises:
        ConfigError: ``server.host`` is not loopback and no API key is configured.
    """
    ring = ring or KeyRing.from_config(settings.serving.auth)
    if ring.open and not is_loopback(settings.server.host):
        raise ConfigError(
            f"{settings.config_path}: server.host = {settings.server.host!r} is reachable from"
            " other machines, but no API key is configured, so anyone could read your data."
            " Add a key: run 'headwater key' and put its [[serving.auth.keys]] entry in the"
            ' config, or bind to host = "127.0.0.1"'
        )


def require_scope(scope: Scope) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the :class:`Principal` of a request allowed ``scope``."""

    def dependency(request: Request) -> Principal:
        ring: KeyRing = request.app.state.keyring
        return ring.authorize(request.headers.get("authorization"), scope)

    return dependency


def scoped(scope: Scope) -> list[Any]:
    """``dependencies=`` for ``include_router``: every route of the router needs ``scope``."""
    return [Depends(require_scope(scope))]
