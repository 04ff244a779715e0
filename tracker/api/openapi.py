"""The OpenAPI 3.1 document of the HTTP API and of the webhook it calls, built from the
validation constants. ``python -m tracker.api.openapi`` prints the published copy
(docs/openapi.json: the default settings with API_TOKEN set; `make openapi` writes it)."""

from __future__ import annotations

import sys
from typing import Any

import orjson

from tracker.api.edge import MAX_BODY, REQUEST_ID_HEADER
from tracker.api.validation import MAX_BATCH
from tracker.delivery.notification import OUTBOUND
from tracker.model import ID_PATTERN
from tracker.ops import schema as admin
from tracker.pod import podmetrics
from tracker.settings import Settings

TIMESTAMP = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 with a zone; absent means now (Redis's clock)."
    " At most 5 minutes in the future.",
}


def _id(description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": ID_PATTERN, "description": description}


def _error_ref() -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


ERRORS = {
    400: "Malformed request or body: invalid_json, invalid_body, or a code of the HTTP parser"
    " (bad_method, bad_url, line_too_long, bad_request)",
    401: "Missing or wrong bearer token (unauthorized)",
    403: "The read-only CONSOLE_TOKEN on anything but a read of /admin or /console (forbidden)",
    404: "Unknown conversation or path (not_found)",
    405: "The path does not take this method (method_not_allowed; Allow lists those it takes)",
    408: "The body did not arrive within HTTP_BODY_TIMEOUT_MS (body_timeout)",
    413: f"Body over {MAX_BODY} bytes (body_too_large) or batch over {MAX_BATCH}"
    " items (batch_too_large)",
    415: "Content-Type is not application/json (unsupported_media_type) or"
    " Content-Encoding is not gzip, deflate or identity (unsupported_encoding)",
    417: "An Expect other than 100-continue (expectation_failed)",
    422: "A field is invalid (invalid_field); the message names it",
    500: "A bug, or a Redis reply that retrying cannot help (internal); logged with the request id",
    503: "Redis is unavailable (unavailable); retry after Retry-After seconds",
}


def _errors(*statuses: int) -> dict[str, Any]:
    out = {}
    for status in (*statuses, 500):
        response: dict[str, Any] = {"description": ERRORS[status], **_error_ref()}
        if status == 503:
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        out[str(status)] = response
    return out


def _json(schema_name: str) -> dict[str, Any]:
    return {
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}
    }


def schemas(settings: Settings) -> dict[str, Any]:
    agent = {
        "type": "object",
        "required": ["agent_id", "message_id"],
        "properties": {
            "agent_id": _id("The agent who wrote"),
            "message_id": _id("The agent message; a replay of the same id is a no-op"),
            "timestamp": TIMESTAMP,
            "timeout_ms": {
                "type": "integer",
                "minimum": settings.min_timeout_ms,
                "maximum": settings.max_timeout_ms,
                "description": "This conversation's interval (default TIMEOUT_INTERVAL_MS)",
            },
        },
    }
    customer = {
        "type": "object",
        "required": ["customer_id", "message_id"],
        "properties": {
            "customer_id": _id(
                "The customer who answered: checked like every id, not stored (the tracker "
                "keeps the answering message id and the response time)"
            ),
            "message_id": _id("The customer message; a replay of the same id is a no-op"),
            "timestamp": TIMESTAMP,
        },
    }
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    return {
        "AgentMessage": agent,
        "CustomerResponse": customer,
        "TrackResult": {
            "type": "object",
            "required": ["conversation_id", "status", "generation", "waiting_since", "next_due_at"],
            "properties": {
                "conversation_id": {"type": "string"},
                "status": {"enum": ["started", "restarted", "duplicate", "stale"]},
                "generation": {"type": "integer"},
                "waiting_since": {"type": "string", "format": "date-time"},
                "next_due_at": nullable_time,
            },
        },
        "RespondResult": {
            "type": "object",
            "required": ["conversation_id", "status", "generation", "response_time_ms"],
            "properties": {
                "conversation_id": {"type": "string"},
                "status": {"enum": ["answered", "duplicate", "stale", "not_waiting"]},
                "generation": {"type": "integer"},
                "response_time_ms": {"type": ["integer", "null"]},
            },
        },
        "Conversation": {
            "type": "object",
            "properties": {
                "conversation_id": {"type": "string"},
                "state": {"enum": ["waiting", "escalated", "answered"]},
                "generation": {"type": "integer"},
                "agent_id": {"type": "string"},
                "message_id": {"type": "string"},
                "waiting_since": {"type": "string", "format": "date-time"},
                "timeout_ms": {"type": "integer"},
                "level_fired": {"type": "integer", "minimum": 0, "maximum": 3},
                "level_delivered": {"type": "integer", "minimum": 0, "maximum": 3},
                "next_due_at": nullable_time,
                "response_time_ms": {"type": ["integer", "null"]},
                "levels": {
                    "type": "array",
                    "description": "Each level of the current waiting period",
                    "items": {"$ref": "#/components/schemas/Level"},
                },
            },
        },
        "Level": {
            "type": "object",
            "required": ["level", "due_at", "status", "event_id", "attempts"],
            "properties": {
                "level": {"type": "integer", "minimum": 1, "maximum": 3},
                "due_at": {"type": "string", "format": "date-time"},
                "status": {
                    "enum": [
                        "scheduled",
                        "staged",
                        "pending",
                        "delivered",
                        "dead_lettered",
                        "suppressed",
                        "superseded",
                        "skipped",
                        "cancelled",
                    ]
                },
                "event_id": {"type": "string"},
                "delivered_at": nullable_time,
                "sinks": {"type": ["array", "null"], "items": {"type": "string"}},
                "attempts": {"type": "integer", "description": "Failed attempts so far"},
                "last_error": {"type": ["string", "null"]},
            },
        },
        "History": {
            "type": "object",
            "required": ["conversation_id", "history"],
            "properties": {
                "conversation_id": {"type": "string"},
                "history": {
                    "type": "array",
                    "description": "What happened, oldest first: waiting periods started and"
                    " answered, and each notification's staging, attempts and outcome",
                    "items": {
                        "type": "object",
                        "required": ["at", "kind", "generation"],
                        "properties": {
                            "at": {"type": "string", "format": "date-time"},
                            "kind": {
                                "enum": [
                                    "started",
                                    "restarted",
                                    "answered",
                                    "delivered",
                                    "attempt_failed",
                                    "dead_lettered",
                                    "replayed",
                                    "suppressed",
                                    "superseded",
                                    "skipped",
                                ]
                            },
                            "generation": {"type": "integer"},
                            "level": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "BatchItem": {
            "oneOf": [
                {"allOf": [{"$ref": "#/components/schemas/AgentMessage"}, _typed("agent_message")]},
                {
                    "allOf": [
                        {"$ref": "#/components/schemas/CustomerResponse"},
                        _typed("customer_response"),
                    ]
                },
            ]
        },
        "BatchResult": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "status"],
                        "properties": {
                            "index": {"type": "integer"},
                            "status": {"enum": ["ok", "error"]},
                            "result": {"type": "object"},
                            "error": {"$ref": "#/components/schemas/ErrorBody"},
                        },
                    },
                }
            },
        },
        "ErrorBody": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}},
        },
    }


def _typed(kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "conversation_id"],
        "properties": {"type": {"const": kind}, "conversation_id": _id("The conversation")},
    }


def _operation(operation_id: str, tag: str, summary: str, **fields: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "tags": [tag], "summary": summary, **fields}


def _post(operation_id: str, summary: str, body: str, result: str) -> dict[str, Any]:
    return _operation(
        operation_id,
        "events",
        summary,
        parameters=[{"$ref": "#/components/parameters/ConversationId"}],
        requestBody={"required": True, **_json(body)},
        responses={
            "200": {"description": "Applied (or ignored as a replay)", **_json(result)},
            **_errors(400, 401, 408, 413, 415, 417, 422, 503),
        },
    )


def _open(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """An operation that needs no token."""
    return _operation(operation_id, "operations", summary, security=[], responses=responses)


def notification_schema() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "required": list(OUTBOUND),
        "properties": {
            "event_id": {
                "type": "string",
                "description": "The same for the same conversation, waiting-since and level:"
                " dedupe by it (it is also the webhook-id header)",
            },
            "conversation_id": _id("The conversation left unanswered"),
            "level": {"type": "integer", "minimum": 1, "maximum": 3},
            "agent_id": _id("The agent who wrote last"),
            "message_id": _id("The agent message the clock started from"),
            "waiting_since": {**time, "description": "The agent message's time (UTC, ms)"},
            "due_at": {**time, "description": "When this level fell due (UTC, ms)"},
            "fired_at": {**time, "description": "When the tracker sent it (UTC, ms)"},
        },
    }


def webhooks() -> dict[str, Any]:
    """The notification the webhook sink POSTs, signed as Standard Webhooks says."""

    def header(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "header",
            "required": True,
            "description": description,
            "schema": {"type": "string"},
        }

    return {
        "timeoutNotification": {
            "post": {
                "operationId": "receiveTimeoutNotification",
                "tags": ["notifications"],
                "summary": "A conversation reached an escalation level (NOTIFY_WEBHOOK_URL)",
                "description": "Verify the signature with a Standard Webhooks library and the"
                " NOTIFY_WEBHOOK_SECRET (whsec_...), then dedupe by webhook-id: a notification"
                " may come more than once.",
                "security": [],
                "parameters": [
                    header("webhook-id", "The event_id"),
                    header("webhook-timestamp", "Unix seconds of this attempt"),
                    header(
                        "webhook-signature",
                        "v1,<base64 HMAC-SHA256 of id.timestamp.body>; one per secret,"
                        " space-separated, while secrets rotate",
                    ),
                ],
                "requestBody": {
                    "required": True,
                    **_json("Notification"),
                },
                "responses": {
                    "2XX": {"description": "Received: not sent again"},
                    "4XX": {
                        "description": "Refused for good (no retry; after MAX_DELIVERIES"
                        " tries it is a dead letter), except 408 and 429, which are retried"
                    },
                    "5XX": {"description": "Retried with backoff and jitter"},
                },
            }
        }
    }


def document(settings: Settings) -> dict[str, Any]:
    report = {
        "type": "object",
        "properties": {
            "redis": {
                "type": "string",
                "description": "ok, or why Redis did not answer: reported, not failed on (an"
                " outage every pod shares would empty the Service)",
            },
            "roles": {
                "type": "object",
                "description": "Each role process of the pod: its progress and the Redis error"
                " it is backing off from",
            },
        },
    }
    ready = {
        "200": {
            "description": "Ready: this pod's programs are up and making progress",
            "content": {
                "application/json": {
                    "schema": {"allOf": [{"properties": {"status": {"const": "ready"}}}, report]}
                }
            },
        },
        "503": {
            "description": "Not ready: a program down (not_running), a role that has not"
            " completed its first round (starting), a role without progress (stalled), a led"
            " shard not swept (not_sweeping)",
            "content": {
                "application/json": {
                    "schema": {"allOf": [{"$ref": "#/components/schemas/Error"}, report]}
                }
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tracker",
            "version": podmetrics.version(),
            "description": "Conversation timeout tracker with progressive escalation. Every"
            ' error is {"error": {"code", "message"}}; every response carries'
            f" {REQUEST_ID_HEADER} (the client's, if valid, else a new one).",
        },
        "tags": [
            {"name": "events", "description": "Agent messages and customer responses"},
            {"name": "conversations", "description": "Where a conversation stands"},
            {"name": "operations", "description": "Probes, metrics and this document"},
            {"name": "notifications", "description": "What the tracker sends (webhooks)"},
            {"name": "admin", "description": "The operator's queries and actions (tracker CLI)"},
            {"name": "console", "description": "The web console's files"},
        ],
        "components": {
            "schemas": {
                **schemas(settings),
                "Notification": notification_schema(),
                **admin.schemas(),
            },
            "parameters": {
                "ConversationId": {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": _id("The conversation"),
                },
            },
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before retrying",
                    "schema": {"type": "string"},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}] if settings.api_tokens else [],
        "paths": {
            "/conversations/{id}/agent-message": {
                "post": _post(
                    "postAgentMessage", "Start or restart the clock", "AgentMessage", "TrackResult"
                )
            },
            "/conversations/{id}/customer-response": {
                "post": _post(
                    "postCustomerResponse", "Stop the clock", "CustomerResponse", "RespondResult"
                )
            },
            "/conversations/{id}": {
                "get": _operation(
                    "getConversation",
                    "conversations",
                    "One conversation's state",
                    parameters=[{"$ref": "#/components/parameters/ConversationId"}],
                    responses={
                        "200": {"description": "The state", **_json("Conversation")},
                        **_errors(401, 404, 422, 503),
                    },
                )
            },
            "/conversations/{id}/history": {
                "get": _operation(
                    "getConversationHistory",
                    "conversations",
                    "One conversation's history: periods, deliveries, attempts",
                    parameters=[{"$ref": "#/components/parameters/ConversationId"}],
                    responses={
                        "200": {"description": "The history", **_json("History")},
                        **_errors(401, 404, 422, 503),
                    },
                )
            },
            "/events": {
                "post": _operation(
                    "postEvents",
                    "events",
                    f"Bulk ingest, at most {MAX_BATCH} events; one result per item",
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "maxItems": MAX_BATCH,
                                    "items": {"$ref": "#/components/schemas/BatchItem"},
                                }
                            }
                        },
                    },
                    responses={
                        "200": {"description": "Per-item results", **_json("BatchResult")},
                        **_errors(400, 401, 408, 413, 415, 417, 503),
                    },
                )
            },
            "/health": {"get": _open("getHealth", "Liveness", {"200": {"description": "Alive"}})},
            "/ready": {
                "get": _open(
                    "getReady", "This pod's processes up and making progress (readiness)", ready
                )
            },
            "/metrics": {
                "get": _open(
                    "getMetrics",
                    "Prometheus metrics of every process of the pod",
                    {"200": {"description": "Metrics"}},
                )
            },
            "/openapi.json": {
                "get": _open("getOpenApi", "This document", {"200": {"description": "OpenAPI"}})
            },
            **admin.paths(_errors, _json),  # the operator's /admin endpoints, the console
        },
        "webhooks": webhooks(),
    }


def published() -> dict[str, Any]:
    """The document as docs/openapi.json holds it: the default settings, with API_TOKEN."""
    return document(Settings.from_env({"API_TOKEN": "any"}))


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(published(), option=orjson.OPT_INDENT_2).decode() + "\n")
