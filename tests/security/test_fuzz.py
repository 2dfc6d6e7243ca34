"""Schema-driven fuzzing: schemathesis sends what the OpenAPI document allows and what it
forbids, and checks that no answer is a 5xx or breaks the documented schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.core.auth import Scope, new_key
from services.core.db.keys import SeedKey
from tests.security.conftest import write_seed
from tests.support.env import CI, make_settings
from tests.support.processes import start_process, wait_until_ready
from tests.support.services import free_port

KEY = new_key()[0]
# Generated requests per operation and key (or none), valid and invalid input alike.
EXAMPLES = 60


@pytest.fixture(scope="module")
def api_url(
    database_url: str, amqp_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`conveyor api` in its own process, keys on, with one admin key seeded."""
    seed = tmp_path_factory.mktemp("fuzz") / "keys.json"
    write_seed(seed, SeedKey(key=KEY, tenant="fuzz", scopes=list(Scope)))
    port = free_port()
    api = make_settings(
        database_url,
        amqp_prefix,
        auth_enabled=True,
        rate_limit="",
        auth_seed_file=str(seed),
        api_port=port,
        api_run_relay=False,
    )
    process = start_process(api, "api")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_no_5xx_and_every_answer_matches_the_documented_schema(api_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    statuses: Counter[int] = Counter()
    for operation in operations:
        for headers in ({"Authorization": f"Bearer {KEY}"}, {}):
            _fuzz(operation, headers, statuses)
    # The fuzz got past the key: plenty of calls succeeded, and keyless ones were refused.
    assert sum(n for status, n in statuses.items() if 200 <= status < 300) >= 100, statuses
    assert statuses[401] > 0, statuses


def _fuzz(
    operation: schemathesis.APIOperation, headers: dict[str, str], statuses: Counter[int]
) -> None:
    @given(case=operation.as_strategy())
    # In CI the same examples each run, so a red build can be replayed; elsewhere new ones.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=CI,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        # Every check but one runs. That one wants each schema-valid request accepted, but
        # no schema can say that a cursor must come from an earlier page, or how deep and
        # large a payload may be once serialized: those get 422 or 413 naming the field.
        response = case.call_and_validate(
            headers=headers, excluded_checks=[positive_data_acceptance]
        )
        statuses[response.status_code] += 1

    call()


def test_the_fuzzer_with_every_check_on_finds_nothing(api_url: str) -> None:
    """Its own command line, every phase (examples, coverage, fuzzing, stateful) and every
    check but two the contract rules out: positive_data_acceptance (no schema can say that
    a cursor must come from an earlier page, that a cron expression is due some day, or how
    deep a payload nests) and use_after_free (DELETE on a task cancels it: it stays to be
    read). revokeKey is left out (the stateful phase would revoke the fuzzer's own key), and
    getTask, whose `?wait=` holds a request up to a minute: the test above fuzzes both."""
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None
    done = subprocess.run(
        [
            st,
            "run",
            f"{api_url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
            "--exclude-operation-id",
            "revokeKey",
            "--exclude-operation-id",
            "getTask",
            "--max-examples",
            "20",
            # One worker: hypothesis describes its filters with ast.parse, which CPython
            # 3.11 can break when threads parse at once (SystemError: AST recursion depth).
            "--workers",
            "1",
            "-H",
            f"Authorization: Bearer {KEY}",
            *(["--seed", "1"] if CI else []),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout
