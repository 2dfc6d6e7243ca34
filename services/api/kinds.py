"""The kinds the API accepts, without importing any handler: the built-in ones, and those
that workers registered in PostgreSQL (services/core/db/kinds.py).

The catalog is read again when it is older than REFRESH_SECONDS, or when a request
names a kind it does not have (a worker may have just registered it), at most once every
MISS_SECONDS for those: a submission of a known kind costs no statement, and made-up
kinds cost one small read a second at most. A payload is accepted when it fits the
schema of some current version of its kind: during a rollout, the old workers' and the
new ones'.

Schemas are checked by jsonschema-rs, whose regular expressions are Rust's, as pydantic's
are (`\\p{L}` works, and a pattern runs in linear time: no payload can make a check
backtrack for seconds); a schema it cannot compile takes any payload, and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from sqlalchemy.exc import SQLAlchemyError

from services.core.db.kinds import KindRegistry, KindVersion
from services.core.errors import StoreUnavailable
from services.core.kinds import Kind, KindCard
from services.core.version import VERSION

logger = logging.getLogger(__name__)

# How long the API judges submissions by what it read of the registry.
REFRESH_SECONDS = 5.0
# The least time between two reads made for a kind the catalog lacks.
MISS_SECONDS = 1.0
Validator = Any  # a compiled jsonschema_rs validator
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
    _validators: tuple[Validator | None, ...]

    def refusal(self, payload: dict[str, Any]) -> tuple[list[str | int], str] | None:
        """None when some current version takes `payload`; else where in it the newest
        version's schema refuses it (a path under the payload), and why."""
        if any(check is None or check.is_valid(payload) for check in self._validators):
            return None
        newest: Validator = self._validators[0]
        error = next(iter(newest.iter_errors(payload)))
        path: list[str | int] = list(error.instance_path)
        if error.kind.name == "required":
            path.append(error.kind.as_dict()["property"])
        return path, error.message[:_MESSAGE_CHARS]


class KindCatalog:
    """What the API knows of kinds; one per API process."""

    def __init__(self, store: KindRegistry, builtin: dict[str, Kind]) -> None:
        self._store = store
        self._builtin = [found.card() for found in builtin.values()]
        # Validators by version: a refresh compiles only the versions it has not seen.
        self._compiled: dict[str, Validator | None] = {}
        self._kinds = self._catalog([])
        self._read_at = float("-inf")
        self._reading = asyncio.Lock()
        self._renewing: asyncio.Task[None] | None = None

    def get(self, name: str) -> Accepted | None:
        """The kind `name` as last read, or None for one no worker registered."""
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def all(self) -> list[Accepted]:
        return [self._kinds[name] for name in self.names()]

    async def ready(self, names: Iterable[str]) -> None:
        """Make the catalog fit to judge `names`. One it lacks is read for at once, unless
        it was read less than MISS_SECONDS ago (concurrent requests share one read);
        StoreUnavailable when that read fails. One older than REFRESH_SECONDS is read again
        in the background, while requests go on with what was read: a request for a known
        kind never waits for the registry, even with the database pool full."""
        asked = time.monotonic()
        age = asked - self._read_at
        if not all(n in self._kinds for n in names):
            if age >= MISS_SECONDS:
                await self._read_since(asked)
        elif age >= REFRESH_SECONDS and (self._renewing is None or self._renewing.done()):
            self._renewing = asyncio.create_task(self._renew(asked))

    async def _read_since(self, asked: float) -> None:
        """Read the registry unless a read began after `asked`."""
        async with self._reading:
            if self._read_at >= asked:
                return
            try:
                await self._read()
            except (StoreUnavailable, SQLAlchemyError) as error:
                self._read_at = asked  # kept as last read; read again later
                raise StoreUnavailable("the kinds workers registered cannot be read") from error

    async def _renew(self, asked: float) -> None:
        try:
            await self._read_since(asked)
        except Exception as error:  # noqa: BLE001 - a background read is logged, never raised
            logger.warning("kinds not read: %s", error.__cause__ or error)

    async def refresh(self) -> None:
        """Read the registry now (a listing shows what is there, not what was); raises
        when it cannot be read."""
        async with self._reading:
            await self._read()

    async def _read(self) -> None:
        began = time.monotonic()
        self._kinds = self._catalog(await self._store.current_kinds())
        self._read_at = began

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

    def _validator(self, card: KindCard) -> Validator | None:
        if card.digest not in self._compiled:
            self._compiled[card.digest] = _compiled(card)
        return self._compiled[card.digest]


def _compiled(card: KindCard) -> Validator | None:
    """The validator of `card`'s payload schema; None (any payload) without one, or for
    one that does not compile, which is logged: the worker's model still checks."""
    if card.payload_schema is None:
        return None
    try:
        return jsonschema_rs.validator_for(card.payload_schema)
    except (jsonschema_rs.ValidationError, ValueError) as error:
        logger.warning("kind %r: its payload schema does not compile: %s", card.name, error)
        return None
