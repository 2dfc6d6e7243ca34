"""The kinds the API accepts, without importing any handler: the built-in ones, and those
that workers registered in PostgreSQL (services/core/db/kinds.py).

The catalog is read again when it is older than REFRESH_SECONDS, or at once when a
request names a kind it does not have (a worker may have just registered it): a
submission of a known kind costs no statement. A payload is accepted when it fits the
schema of some current version of its kind: during a rollout, the old workers' and the
new ones'.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from sqlalchemy.exc import SQLAlchemyError

from services.core.db.kinds import KindRegistry, KindVersion
from services.core.errors import StoreUnavailable
from services.core.kinds import Kind, KindCard
from services.core.version import VERSION

logger = logging.getLogger(__name__)

# How long the API judges submissions by what it read of the registry.
REFRESH_SECONDS = 5.0
# A refusal quotes so many characters of what the schema said at most.
_MESSAGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class Accepted:
    """A kind the API accepts, and the payloads it accepts for it."""

    name: str
    # Where its tasks go unless their submission names a queue: its newest version's.
    queue: str
    # Its current versions, newest first (a built-in kind no worker registered yet: one,
    # with no workers).
    versions: tuple[KindVersion, ...]
    builtin: bool
    # One per version; None where the version takes any JSON object.
    _validators: tuple[Draft202012Validator | None, ...]

    def refusal(self, payload: dict[str, Any]) -> tuple[list[str | int], str] | None:
        """None when some current version takes `payload`; else where in it the newest
        version's schema refuses it (a path under the payload), and why."""
        if any(check is None or check.is_valid(payload) for check in self._validators):
            return None
        newest = self._validators[0]
        assert newest is not None
        error = best_match(newest.iter_errors(payload))
        path: list[str | int] = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [name for name in error.validator_value if name not in error.instance]
            path += missing[:1]
        return path, error.message[:_MESSAGE_CHARS]


class KindCatalog:
    """What the API knows of kinds; one per API process."""

    def __init__(self, store: KindRegistry, builtin: dict[str, Kind]) -> None:
        self._store = store
        self._builtin = [found.card() for found in builtin.values()]
        # Validators by version: a refresh compiles only the versions it has not seen.
        self._compiled: dict[str, Draft202012Validator | None] = {}
        self._kinds = self._catalog([])
        self._read_at = float("-inf")
        self._reading = asyncio.Lock()

    def get(self, name: str) -> Accepted | None:
        """The kind `name` as last read, or None for one no worker registered."""
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def all(self) -> list[Accepted]:
        return [self._kinds[name] for name in self.names()]

    async def ready(self, names: Iterable[str]) -> None:
        """Read the registry again if what was read is older than REFRESH_SECONDS, or does
        not have one of `names`, and no read began since this call: concurrent requests
        that need a read share one."""
        asked = time.monotonic()
        if asked - self._read_at < REFRESH_SECONDS and all(n in self._kinds for n in names):
            return
        async with self._reading:
            if self._read_at >= asked:
                return
            began = time.monotonic()
            try:
                self._kinds = self._catalog(await self._store.current_kinds())
            except (StoreUnavailable, SQLAlchemyError) as error:
                # Kept as last read, and read again after REFRESH_SECONDS: a registry that
                # cannot be read costs no submission of a kind already known.
                logger.warning("kinds not read: %s", getattr(error, "orig", None) or error)
                if not all(n in self._kinds for n in names):
                    raise StoreUnavailable("the kinds workers registered cannot be read") from error
            self._read_at = began

    async def refresh(self) -> None:
        """Read the registry now (a listing shows what is there, not what was)."""
        self._read_at = float("-inf")
        await self.ready(())

    def _catalog(self, registered: list[KindVersion]) -> dict[str, Accepted]:
        by_name: dict[str, list[KindVersion]] = {}
        for version in registered:  # newest first within a name
            by_name.setdefault(version.card.name, []).append(version)
        builtin = {card.name: card for card in self._builtin}
        for name, card in builtin.items():
            if name not in by_name:
                by_name[name] = [KindVersion(card, VERSION, None, 0)]
        compiled, self._compiled = self._compiled, {}
        for versions in by_name.values():  # keep only the current versions' validators
            for version in versions:
                if version.card.digest in compiled:
                    self._compiled[version.card.digest] = compiled[version.card.digest]
        return {
            name: Accepted(
                name,
                versions[0].card.queue,
                tuple(versions),
                name in builtin,
                tuple(self._validator(version.card) for version in versions),
            )
            for name, versions in by_name.items()
        }

    def _validator(self, card: KindCard) -> Draft202012Validator | None:
        if card.digest not in self._compiled:
            schema = card.payload_schema
            self._compiled[card.digest] = None if schema is None else Draft202012Validator(schema)
        return self._compiled[card.digest]
