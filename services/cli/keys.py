"""`conveyor keys`: API keys made, listed and revoked straight in the database.

Building the parser imports nothing of the server; the database, the settings and the key
store are imported when a key command runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.core.auth import Scope
    from services.core.db.keys import SqlKeyStore


def run_keys(args: argparse.Namespace) -> int:
    """`conveyor keys ACTION`: answers the exit status."""
    if args.action == "generate":
        return _generate_key(args)
    import asyncio

    from services.core.db.engine import create_engine
    from services.core.db.keys import SqlKeyStore
    from services.core.db.schema import SCHEMA_REVISION, current_revision
    from services.core.settings import Settings

    async def run() -> int:
        engine = create_engine(Settings())
        try:
            if await current_revision(engine) != SCHEMA_REVISION:
                print("the database is not migrated yet: run `conveyor migrate`", file=sys.stderr)
                return 1
            return await _KEY_ACTIONS[args.action](SqlKeyStore(engine), args)
        finally:
            await engine.dispose()

    return asyncio.run(run())


async def _create_key(keys: SqlKeyStore, args: argparse.Namespace) -> int:
    key, stored = await keys.create(args.tenant, args.scopes, args.name)
    print(key)
    print(
        f"key {stored.id} of tenant {stored.tenant}, scopes {','.join(sorted(stored.scopes))}:"
        " keep it now, it is not shown again",
        file=sys.stderr,
    )
    return 0


async def _list_keys(keys: SqlKeyStore, args: argparse.Namespace) -> int:
    print(f"{'ID':12}  {'TENANT':20}  {'SCOPES':28}  {'CREATED':20}  {'REVOKED':20}  NAME")
    for key in await keys.of_tenant(args.tenant):
        revoked = key.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if key.revoked_at else "-"
        print(
            f"{key.id:12}  {key.tenant:20}  {','.join(sorted(key.scopes)):28}  "
            f"{key.created_at:%Y-%m-%dT%H:%M:%SZ}  {revoked:20}  {key.name}"
        )
    return 0


async def _revoke_key(keys: SqlKeyStore, args: argparse.Namespace) -> int:
    from services.core.errors import KeyNotFound

    try:
        revoked = await keys.revoke(args.id)
    except KeyNotFound as error:
        print(error, file=sys.stderr)
        return 1
    print(f"key {revoked.id} of tenant {revoked.tenant} is revoked", file=sys.stderr)
    return 0


def _generate_key(args: argparse.Namespace) -> int:
    """A seed-file entry with a new key, made offline: for the chart's Secret."""
    from services.core.auth import new_key
    from services.core.db.keys import SeedKey

    entry = SeedKey(
        key=new_key()[0], tenant=args.tenant, scopes=sorted(args.scopes), name=args.name
    )
    print(json.dumps(entry.model_dump(mode="json")))
    return 0


def _tenant(text: str) -> str:
    from services.core.auth import TENANT_PATTERN

    if not re.fullmatch(TENANT_PATTERN, text):
        raise argparse.ArgumentTypeError("lowercase letters, digits and '-', at most 63")
    return text


def _scopes(text: str) -> frozenset[Scope]:
    from services.core.auth import parse_scopes

    try:
        return parse_scopes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_key_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `keys` command and its actions."""
    keys = commands.add_parser(
        "keys",
        help="make, list and revoke API keys (in the database)",
        description="Make, list and revoke API keys, straight in the database "
        "(CONVEYOR_DATABASE_URL); `generate` needs no database.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION", title="actions")
    for name, text in [
        ("create", "make a key and print it, once"),
        ("generate", "print a seed-file entry with a new key; stores nothing"),
    ]:
        action = actions.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.")
        action.add_argument(
            "--tenant", required=True, type=_tenant, help="the tenant the key acts for"
        )
        action.add_argument(
            "--scopes",
            required=True,
            type=_scopes,
            help="comma-separated: submit, read, cancel, admin, platform",
        )
        action.add_argument("--name", default="", help="what the key is for")
    listing = actions.add_parser(
        "list",
        help="list keys, revoked ones included",
        description="List keys, revoked ones included.",
    )
    listing.add_argument("--tenant", type=_tenant, help="only this tenant's keys")
    revoke = actions.add_parser(
        "revoke", help="revoke a key for good", description="Revoke a key for good."
    )
    revoke.add_argument("id", help="the key's id (the part after cvk_)")


_KEY_ACTIONS: dict[str, Callable[[SqlKeyStore, argparse.Namespace], Awaitable[int]]] = {
    "create": _create_key,
    "list": _list_keys,
    "revoke": _revoke_key,
}
