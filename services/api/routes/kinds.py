"""/api/v1/kinds: the kinds the installation takes, as workers registered them.

Any key may list them: a tenant needs to know what it may submit. Forgetting one changes
what every tenant may submit, so it needs the platform scope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from services.api.auth import Anyone, Platform
from services.api.deps import ServicesDep
from services.api.errors import Refused
from services.api.kinds import Accepted
from services.api.problems import ProblemType
from services.api.responses import errors, json_response
from services.api.schemas import KindOut, KindPage, KindVersionOut

router = APIRouter(prefix="/api/v1/kinds", tags=["kinds"])


@router.get("", response_model=KindPage, responses=errors())
async def list_kinds(services: ServicesDep, _: Anyone) -> Response:
    """Every kind the API takes now, by name, with its payload schema and its workers."""
    await services.kinds.refresh()
    return json_response(KindPage(items=[_out(kind) for kind in services.kinds.all()]))


@router.delete("/{name}", status_code=204, responses=errors(404, 409))
async def forget_kind(
    name: Annotated[str, Path(min_length=1, max_length=100)],
    services: ServicesDep,
    _: Platform,
) -> Response:
    """Forget a kind no worker runs any more: the API takes it no longer. A worker that
    still runs it registers it again when it starts. A built-in kind cannot be forgotten,
    nor one a live worker runs (409)."""
    await services.kinds.refresh()
    kind = services.kinds.get(name)
    if kind is None:
        detail = f"no kind {name!r} is registered"
        raise Refused(404, ProblemType.KIND_NOT_FOUND, detail, loc=["path", "name"])
    in_use = "is built in" if kind.builtin else "is run by live workers"
    if kind.builtin or any(version.workers for version in kind.versions):
        raise Refused(409, ProblemType.KIND_IN_USE, f"{name!r} {in_use}", loc=["path", "name"])
    if not await services.store.forget_kind(name):  # a worker came meanwhile
        raise Refused(409, ProblemType.KIND_IN_USE, f"{name!r} {in_use}", loc=["path", "name"])
    await services.kinds.refresh()
    return Response(status_code=204)


def _out(kind: Accepted) -> KindOut:
    newest = kind.versions[0].card
    return KindOut(
        name=kind.name,
        description=newest.description,
        builtin=kind.builtin,
        queue=kind.queue,
        workers=sum(version.workers for version in kind.versions),
        payload_schema=newest.payload_schema,
        versions=[
            KindVersionOut(
                digest=version.card.digest,
                version=version.version,
                registered_at=version.registered_at,
                workers=version.workers,
                queue=version.card.queue,
                timeout_seconds=version.card.timeout_seconds,
                payload_schema=version.card.payload_schema,
            )
            for version in kind.versions
        ],
    )
