"""schemathesis against the live API: no 5xx, and every status, content type, header and
body as the OpenAPI document describes them.

The cases are generated at collection time, before the API runs, from
``tracker.api.openapi.document`` built with the API's own settings; a test checks that the
live /openapi.json is that same document. (schemathesis' lazy ``from_fixture`` loader
does not run on pytest 9.)"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.support.processes import running_api
from tests.support.redis_server import RedisServer
from tracker.api.openapi import document
from tracker.settings import Settings

pytestmark = pytest.mark.slow

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


#: The API's settings that shape the document (the rest do not change it).
API_ENV = {"POD_ID": "schema", "HOST": "127.0.0.1"}
SETTINGS = Settings.from_env({**API_ENV, "REDIS_URL": "redis://127.0.0.1:1/0"})
schema = schemathesis.openapi.from_dict(document(SETTINGS))


@pytest.fixture(scope="module")
def live_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API as a real process; its Redis database is emptied first."""
    redis_server.client().flushall()
    with running_api(redis_server.url, tmp_path_factory.mktemp("schema"), **API_ENV) as base:
        yield base


def test_the_live_document_is_the_one_tested(live_api: str) -> None:
    with urllib.request.urlopen(f"{live_api}/openapi.json") as resp:
        assert json.loads(resp.read()) == document(SETTINGS)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case[Any], live_api: str) -> None:
    case.call_and_validate(base_url=live_api, checks=CHECKS)


def test_the_cases_were_both_accepted_and_rejected(live_api: str) -> None:
    """The run above did reach the handlers with good and with bad input."""
    with urllib.request.urlopen(f"{live_api}/metrics") as resp:
        text = resp.read().decode()
    statuses = {
        line.split('status="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("http_requests_total{")
    }
    assert {"200", "422"} <= statuses, statuses
    assert not any(s.startswith("5") for s in statuses), statuses
