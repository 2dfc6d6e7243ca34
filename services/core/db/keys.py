"""API keys in PostgreSQL: made, listed, revoked, looked up, and seeded from a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core.auth import KEY_PATTERN, TENANT_PATTERN, ApiKey, Scope, new_key, parse_key
from services.core.db.engine import connect
from services.core.db.tables import api_keys
from services.core.domain import NO_NUL
from services.core.errors import KeyNotFound, TooManyKeys

# One lock per tenant (two int4 keys: this table's, the tenant's) for the keys it makes.
_LOCK_TENANT_KEYS = sa.text(
    "SELECT pg_advisory_xact_lock(hashtext('conveyor.api_keys'), hashtext(:tenant))"
)
_SHOWN = [
    api_keys.c[name] for name in ("id", "tenant", "name", "scopes", "created_at", "revoked_at")
]


class SeedKey(BaseModel):
    """One entry of a seed file: a key made elsewhere (`conveyor keys generate`)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN)
    tenant: str = Field(pattern=TENANT_PATTERN)
    scopes: list[Scope] = Field(min_length=1)
    name: str = Field("", max_length=200, pattern=NO_NUL)


def load_seed(path: Path) -> list[SeedKey]:
    """The keys of a seed file (a JSON list); ValueError naming what is wrong."""
    return TypeAdapter(list[SeedKey]).validate_json(path.read_bytes())


async def _check_room(connection: AsyncConnection, tenant: str, limit: int) -> None:
    """TooManyKeys unless `tenant` has fewer than `limit` keys in use; the caller's transaction
    then holds the tenant's lock, so no other creation counts before this one is stored."""
    await connection.execute(_LOCK_TENANT_KEYS, {"tenant": tenant})
    in_use = await connection.scalar(
        sa.select(sa.func.count())
        .select_from(api_keys)
        .where(api_keys.c.tenant == tenant, api_keys.c.revoked_at.is_(None))
    )
    if (in_use or 0) >= limit:
        raise TooManyKeys(tenant, limit)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        row.id,
        row.tenant,
        row.name,
        frozenset(Scope(s) for s in row.scopes),
        row.created_at,
        row.revoked_at,
    )


class SqlKeyStore:
    """API keys in the `api_keys` table. Holds digests of their secrets, never the secrets."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, tenant: str, scopes: frozenset[Scope], name: str = "", *, limit: int | None = None
    ) -> tuple[str, ApiKey]:
        """A new key for `tenant`: the full key (shown once, stored nowhere) and its record.

        With `limit`, TooManyKeys when the tenant already has that many keys in use. The count
        and the insert are one step however many ask at once: both run under a lock of the
        tenant's keys that the transaction holds to its end.
        """
        key, material = new_key()
        values = {
            "id": material.key_id,
            "tenant": tenant,
            "name": name,
            "scopes": sorted(scopes),
            "secret_digest": material.digest,
            "created_at": sa.func.now(),
        }
        async with connect(self._engine, transaction=True) as connection:
            if limit is not None:
                await _check_room(connection, tenant, limit)
            row = (
                await connection.execute(api_keys.insert().values(values).returning(*_SHOWN))
            ).one()
        return key, _api_key(row)

    async def of_tenant(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key, or one tenant's, oldest first; revoked ones included."""
        query = sa.select(*_SHOWN).order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        async with connect(self._engine) as connection:
            return [_api_key(row) for row in await connection.execute(query)]

    async def revoke(self, key_id: str, tenant: str | None = None) -> ApiKey:
        """Revoke a key for good (again is harmless); KeyNotFound, also for another tenant's."""
        where = [api_keys.c.id == key_id]
        if tenant is not None:
            where.append(api_keys.c.tenant == tenant)
        revoked_at = sa.func.coalesce(api_keys.c.revoked_at, sa.func.now())
        statement = api_keys.update().where(*where).values(revoked_at=revoked_at).returning(*_SHOWN)
        async with connect(self._engine, transaction=True) as connection:
            row = (await connection.execute(statement)).first()
        if row is None:
            raise KeyNotFound(key_id)
        return _api_key(row)

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key `key_id` and the digest of its secret, or None."""
        query = sa.select(*_SHOWN, api_keys.c.secret_digest).where(api_keys.c.id == key_id)
        async with connect(self._engine) as connection:
            row = (await connection.execute(query)).first()
        return (_api_key(row), row.secret_digest) if row is not None else None

    async def seed(self, keys: list[SeedKey]) -> int:
        """Add the keys not stored yet; never changes or revives a stored one. Answers how many."""
        rows = []
        for entry in keys:
            material = parse_key(entry.key)
            assert material is not None  # the model's pattern is the key's shape
            rows.append(
                {
                    "id": material.key_id,
                    "tenant": entry.tenant,
                    "name": entry.name,
                    "scopes": sorted(set(entry.scopes)),
                    "secret_digest": material.digest,
                }
            )
        if not rows:
            return 0
        statement = insert(api_keys).values(rows).on_conflict_do_nothing(index_elements=["id"])
        async with connect(self._engine, transaction=True) as connection:
            return (await connection.execute(statement)).rowcount
