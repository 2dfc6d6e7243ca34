"""API keys: their format, scopes and hashing. Pure Python; stores and the API build on it.

A key reads `cvk_<key id>_<secret>`. The key id is public: it names the key in listings,
logs and revocations, and finds its row. Only a SHA-256 digest of the secret is stored
(the secret is 256 random bits, so a slow password hash would add nothing), and digests are
compared in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

PREFIX = "cvk"
DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
KEY_PATTERN = rf"^{PREFIX}_([a-z0-9]{{12}})_([A-Za-z0-9_-]{{43}})$"
_KEY = re.compile(KEY_PATTERN)


class Scope(enum.StrEnum):
    """What a key may do, within its own tenant."""

    SUBMIT = "submit"
    READ = "read"
    CANCEL = "cancel"
    # Every scope above, and the management of the tenant's keys.
    ADMIN = "admin"
    # The installation's own operations (pausing queues, reading every queue's backlog):
    # held only by keys the platform makes (`conveyor keys create`, the seed file), never
    # implied by admin, and never given through the API.
    PLATFORM = "platform"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a tenant, through one key (None when auth is off)."""

    tenant: str
    scopes: frozenset[Scope]
    key_id: str | None = None

    def may(self, scope: Scope) -> bool:
        """True when this principal holds `scope`, or admin (which never implies platform)."""
        if scope is Scope.PLATFORM:
            return scope in self.scopes
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, as listings show it: never its secret."""

    id: str
    tenant: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """A key as sent by a client: its public id and its secret."""

    key_id: str
    secret: str

    @property
    def digest(self) -> str:
        return digest(self.secret)


def new_key() -> tuple[str, KeyMaterial]:
    """A fresh key: the full string to hand out once, and its parts."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    material = KeyMaterial(key_id, secrets.token_urlsafe(32))
    return f"{PREFIX}_{material.key_id}_{material.secret}", material


def parse_key(key: str) -> KeyMaterial | None:
    """The parts of `key`, or None when it is not shaped like one of ours."""
    match = _KEY.fullmatch(key)
    return KeyMaterial(match[1], match[2]) if match else None


def digest(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(material: KeyMaterial, stored_digest: str) -> bool:
    """Whether `material` is the key whose digest is stored, compared in constant time."""
    return hmac.compare_digest(material.digest, stored_digest)


def parse_scopes(text: str) -> frozenset[Scope]:
    """Scopes from `submit,read`; ValueError naming an unknown one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("at least one scope is needed")
    try:
        return frozenset(Scope(name) for name in names)
    except ValueError:
        known = ", ".join(scope.value for scope in Scope)
        raise ValueError(f"unknown scope in {text!r}; known: {known}") from None
