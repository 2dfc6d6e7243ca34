"""/api/v1/keys: a tenant's admins make, list and revoke the tenant's API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from services.api.auth import Admin
from services.api.deps import ServicesDep
from services.api.responses import errors, json_response
from services.api.schemas import KeyCreate, KeyCreated, KeyOut, KeyPage
from services.core.auth import Scope

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])
KeyId = Annotated[str, Path(pattern=r"^[a-z0-9]{12}$", description="The key's public id")]


@router.post("", status_code=201, response_model=KeyCreated, responses=errors(409, 422))
async def create_key(body: KeyCreate, services: ServicesDep, principal: Admin) -> Response:
    """A new key of the caller's tenant. Its secret is in this answer and nowhere else.

    A tenant has at most CONVEYOR_MAX_KEYS_PER_TENANT keys in use (409 beyond): every key
    has its own rate limit, so more keys must not mean more requests without end. The
    count and the insert are one step in PostgreSQL, so the limit holds under any concurrency.
    """
    key, stored = await services.keys.create(
        principal.tenant,
        frozenset(Scope(scope) for scope in body.scopes),
        body.name,
        limit=services.settings.max_keys_per_tenant,
    )
    return json_response(KeyCreated(key=key, **KeyOut.from_key(stored).model_dump()), 201)


@router.get("", response_model=KeyPage, responses=errors())
async def list_keys(services: ServicesDep, principal: Admin) -> Response:
    """The tenant's keys, oldest first, revoked ones included; never their secrets."""
    keys = await services.keys.of_tenant(principal.tenant)
    return json_response(KeyPage(items=[KeyOut.from_key(key) for key in keys]))


@router.delete("/{key_id}", response_model=KeyOut, responses=errors(404, 422))
async def revoke_key(key_id: KeyId, services: ServicesDep, principal: Admin) -> Response:
    """Revoke a key of the tenant for good; other API processes stop taking it within
    CONVEYOR_AUTH_CACHE_SECONDS."""
    revoked = await services.keys.revoke(key_id, principal.tenant)
    services.auth.forget(key_id)
    return json_response(KeyOut.from_key(revoked))
