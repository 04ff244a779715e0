"""The OpenAPI document (issue 15.12): the committed docs/openapi.json is what the API
serves, every operation has an operationId and tags, the notification and its Standard
Webhooks headers are in `webhooks`, and info.version is the package's version."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.redis_server import RedisServer
from tracker.api.app import create_app
from tracker.api.openapi import published
from tracker.delivery.notification import OUTBOUND

DOC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for section in ("paths", "webhooks"):
        for item in doc.get(section, {}).values():
            out += [op for method, op in item.items() if method in METHODS]
    return out


async def served(aiohttp_client: AiohttpClient, app: web.Application) -> dict[str, Any]:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    response = await client.get("/openapi.json")
    assert response.status == 200
    body: dict[str, Any] = orjson.loads(await response.read())
    return body


async def test_the_committed_document_is_the_served_one(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    """docs/openapi.json is what an API with the default settings and API_TOKEN set serves
    (`make openapi` writes it again after a change)."""
    settings = make_settings(redis_server.url, tmp_path / "run", API_TOKEN="some-token")
    assert await served(aiohttp_client, create_app(settings, redis)) == orjson.loads(
        DOC.read_bytes()
    )
    assert orjson.loads(DOC.read_bytes()) == published()


def test_every_operation_has_a_unique_operation_id_and_a_declared_tag() -> None:
    doc = published()
    validate(doc)
    ops = operations(doc)
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids)) == len(ops)
    declared = {tag["name"] for tag in doc["tags"]}
    for op in ops:
        assert op["tags"]
        assert set(op["tags"]) <= declared


def test_info_version_is_the_package_version() -> None:
    assert published()["info"]["version"] == version("tracker")


def test_webhooks_describe_the_notification_and_its_signature_headers() -> None:
    doc = published()
    post = doc["webhooks"]["timeoutNotification"]["post"]
    headers = {p["name"] for p in post["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    schema = doc["components"]["schemas"]["Notification"]
    assert tuple(schema["required"]) == OUTBOUND  # every field of every notification
    assert set(schema["properties"]) == set(OUTBOUND)
    assert {"2XX", "4XX", "5XX"} <= set(post["responses"])


def test_every_error_status_refers_to_the_error_envelope() -> None:
    doc = published()
    for op in operations(doc):
        for status, response in op["responses"].items():
            if status[0] in "45" and status[1:] != "XX":
                schema = response["content"]["application/json"]["schema"]
                envelope = {"$ref": "#/components/schemas/Error"}
                # the envelope, or the envelope and more (/ready's report)
                assert envelope in (schema, *schema.get("allOf", ())[:1]), (
                    op["operationId"],
                    status,
                )
