"""The OpenAPI description of the operator's `/admin` endpoints and the `/console` files
(merged into `tracker.api.openapi`'s document): the JSON answers of `tracker.ops`."""

from __future__ import annotations

from typing import Any

from tracker.model import ID_PATTERN
from tracker.ops.dead_letters import ID_FORMS

MAX_LIMIT = 1000  # of the endpoints' lists (the CLI allows more)
MAX_IDS = 1000

_INT = {"type": "integer"}
_STR = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def schemas() -> dict[str, Any]:
    notification = _object(
        {
            "event_id": _STR,
            "conversation_id": _STR,
            "level": _INT,
            "agent_id": _STR,
            "message_id": _STR,
            "waiting_since": _TIME,
            "due_at": _TIME,
        }
    )
    shard = _object(
        {
            "shard": _INT,
            "leader": _nullable(_STR),
            "lease_ttl_ms": _nullable(_INT),
            "waiting": _INT,
            "oldest_overdue_ms": _INT,
            "backlog": _nullable(_INT),
            "backlog_overdue_ms": _INT,
            "pending": _INT,
            "pending_overdue_ms": _INT,
            "dead_letters": _INT,
            "epoch": _INT,
            "refuses_writes": {"type": "boolean"},
        }
    )
    return {
        "AdminStatus": {
            **_object(
                {
                    "at": _TIME,
                    "healthy": {"type": "boolean"},
                    "problems": {"type": "array", "items": _STR},
                    "overdue_limit_ms": _INT,
                    "layout": _object({"count": _INT, "previous": _nullable(_INT), "epoch": _INT}),
                    "pods": {"type": "array", "items": _STR},
                    "totals": {"type": "object", "additionalProperties": _nullable(_INT)},
                    "shards": {"type": "array", "items": shard},
                    "redis": {"type": "array", "items": {"type": "object"}},
                    "roles": {"type": "array", "items": {"type": "object"}},
                }
            ),
            "description": "tracker status --json: healthy is false when problems lists any",
        },
        "PendingEntry": {
            "type": "object",
            "required": ["id", "shard", "state", "consumer", "idle_ms", "times_read", "attempts"],
            "properties": {
                "id": _STR,
                "shard": _INT,
                "state": {"enum": ["held", "delivering", "failing", "gone", "malformed"]},
                "conversation_id": _nullable(_STR),
                "level": _nullable(_INT),
                "due_at": _nullable(_TIME),
                "consumer": _STR,
                "idle_ms": _INT,
                "times_read": _INT,
                "attempts": _INT,
                "last_error": _nullable(_STR),
            },
        },
        "PendingListing": _object(
            {"total": _INT, "pending": {"type": "array", "items": _ref("PendingEntry")}}
        ),
        "DeadLetter": {
            "type": "object",
            "required": ["id", "shard", "dead_lettered_at", "malformed", "notification"],
            "properties": {
                "id": {**_STR, "description": ID_FORMS},
                "shard": _INT,
                "dead_lettered_at": _TIME,
                "reason": _nullable(_STR),
                "last_error": _nullable(_STR),
                "attempts": _nullable(_INT),
                "malformed": {"type": "boolean"},
                "notification": _nullable(notification),
                "fields": {"type": "object", "description": "a malformed entry's, as they were"},
            },
        },
        "DeadLetterListing": _object(
            {"total": _INT, "dead_letters": {"type": "array", "items": _ref("DeadLetter")}}
        ),
        "DeadLetterIds": {
            "type": "object",
            "required": ["ids"],
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_IDS,
                    "items": {**_STR, "description": ID_FORMS},
                }
            },
        },
        "Replayed": _object(
            {
                "replayed": {"type": "array", "items": _STR},
                "refused": {"type": "object", "additionalProperties": _STR},
                "gone": {"type": "array", "items": _STR},
            }
        ),
        "Purged": _object({"purged": _INT}),
        "ConversationReport": _object(
            {
                "shard": _INT,
                "conversation": _ref("Conversation"),
                "history": {"type": "array", "items": {"type": "object"}},
                "in_streams": {"type": "array", "items": {"type": "object"}},
            }
        ),
    }


def paths(errors: Any, json: Any) -> dict[str, Any]:
    """`errors(*statuses)` and `json(schema name)` are the main document's helpers."""

    def query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": schema}

    limit = query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})

    def read(
        operation_id: str, summary: str, result: str, *parameters: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "get": {
                "operationId": operation_id,
                "tags": ["admin"],
                "summary": summary,
                "parameters": list(parameters),
                "responses": {
                    "200": {"description": "OK", **json(result)},
                    **errors(401, 403, 422, 503),
                },
            }
        }

    def act(operation_id: str, summary: str, result: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation_id,
                "tags": ["admin"],
                "summary": summary,
                "requestBody": {"required": True, **json("DeadLetterIds")},
                "responses": {
                    "200": {"description": "Done", **json(result)},
                    **errors(400, 401, 403, 404, 413, 415, 422, 503),
                },
            }
        }

    def page(operation_id: str, summary: str, content_type: str) -> dict[str, Any]:
        return {
            "get": {
                "operationId": operation_id,
                "tags": ["console"],
                "summary": summary,
                "security": [],
                "responses": {"200": {"description": "The file", "content": {content_type: {}}}},
            }
        }

    return {
        "/admin/status": read(
            "getAdminStatus", "tracker status: shards, Redis, roles, problems", "AdminStatus"
        ),
        "/admin/pending": read(
            "getAdminPending",
            "tracker pending: entries read and not acknowledged, oldest first",
            "PendingListing",
            query("shard", {"type": "integer", "minimum": 0}),
            limit,
        ),
        "/admin/dead-letters": read(
            "getAdminDeadLetters",
            "tracker dead-letters list: newest first",
            "DeadLetterListing",
            limit,
            query("conversation", {"type": "string", "pattern": ID_PATTERN}),
            query("since", {"type": "string", "description": "RFC 3339, or 30s, 15m, 2h, 7d ago"}),
        ),
        "/admin/dead-letters/replay": act(
            "replayDeadLetters",
            "Put dead letters back on their shard stream (all named must exist)",
            "Replayed",
        ),
        "/admin/dead-letters/purge": act(
            "purgeDeadLetters", "Delete dead letters (all named must exist)", "Purged"
        ),
        "/admin/conversation": {
            "get": {
                "operationId": "getAdminConversation",
                "tags": ["admin"],
                "summary": "tracker conversation: its state, levels and history",
                "parameters": [query("id", {"type": "string", "pattern": ID_PATTERN}, True)],
                "responses": {
                    "200": {"description": "OK", **json("ConversationReport")},
                    **errors(401, 403, 404, 422, 503),
                },
            }
        },
        "/console": page("getConsole", "The web console (it asks for a token)", "text/html"),
        "/console/console.js": page("getConsoleScript", "The console's script", "text/javascript"),
        "/console/console.css": page("getConsoleStyle", "The console's style", "text/css"),
    }
