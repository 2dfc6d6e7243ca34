"""API keys, and the caller a key makes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

from services.api.schemas.common import CREATED, ITEMS, Body, Text
from services.core.auth import ApiKey, Scope

_TENANT = "The tenant the key acts for"
_PURPOSE = "What the key is for, for people"


def _tenant_scope(scope: Any) -> Any:
    if scope == Scope.PLATFORM:
        raise ValueError("the platform scope is given by `conveyor keys create` only")
    return scope


# The scopes a tenant's admin may give: the platform scope never goes over HTTP.
TenantScope = Annotated[
    Literal["submit", "read", "cancel", "admin"], BeforeValidator(_tenant_scope)
]


class KeyCreate(Body):
    scopes: list[TenantScope] = Field(
        min_length=1, max_length=4, description="Any of submit, read, cancel and admin"
    )
    name: Text = Field("", max_length=200, description=_PURPOSE)


class KeyOut(BaseModel):
    id: str = Field(description="The key's public id (the part after cvk_)")
    tenant: str = Field(description=_TENANT)
    name: str = Field(description=_PURPOSE)
    scopes: list[Scope] = Field(description="What the key may do")
    created_at: AwareDatetime = Field(description=CREATED)
    revoked_at: AwareDatetime | None = Field(description="When it was revoked; null while in use")

    @classmethod
    def from_key(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            tenant=key.tenant,
            name=key.name,
            scopes=sorted(key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(description="The whole key; shown this once and stored nowhere")


class KeyPage(BaseModel):
    items: list[KeyOut] = Field(description=ITEMS)


class WhoAmI(BaseModel):
    """The caller, as its key makes it."""

    tenant: str = Field(description=_TENANT)
    key_id: str | None = Field(description="null when API keys are off")
    scopes: list[Scope] = Field(description="What the key may do (admin implies all but platform)")
    auth_enabled: bool = Field(
        description="False when the installation runs without API keys (a laptop)"
    )
