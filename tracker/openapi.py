"""The OpenAPI 3.1 document of the HTTP API, built from the validation constants."""

from __future__ import annotations

from typing import Any

from tracker.ops import schema as admin
from tracker.settings import Settings
from tracker.validation import ID_PATTERN, MAX_BATCH

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


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Malformed body",
        401: "Missing or wrong bearer token",
        403: "The read-only CONSOLE_TOKEN on anything but a read of /admin or /console",
        404: "Unknown conversation",
        413: "Body or batch too large",
        415: "Content-Type is not application/json",
        422: "A field is invalid",
        503: "Redis is unavailable; retry after Retry-After seconds",
    }
    return {str(s): {"description": text[s], **_error_ref()} for s in statuses}


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
            "customer_id": _id("The customer who answered"),
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


def _post(summary: str, body: str, result: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [{"$ref": "#/components/parameters/ConversationId"}],
        "requestBody": {"required": True, **_json(body)},
        "responses": {
            "200": {"description": "Applied (or ignored as a replay)", **_json(result)},
            **_errors(400, 401, 413, 415, 422, 503),
        },
    }


def document(settings: Settings) -> dict[str, Any]:
    simple = {"200": {"description": "OK"}, **_errors(503)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tracker",
            "version": "1.0.0",
            "description": "Conversation timeout tracker with progressive escalation",
        },
        "components": {
            "schemas": {**schemas(settings), **admin.schemas()},
            "parameters": {
                "ConversationId": {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": _id("The conversation"),
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}] if settings.api_tokens else [],
        "paths": {
            "/conversations/{id}/agent-message": {
                "post": _post("Start or restart the clock", "AgentMessage", "TrackResult")
            },
            "/conversations/{id}/customer-response": {
                "post": _post("Stop the clock", "CustomerResponse", "RespondResult")
            },
            "/conversations/{id}": {
                "get": {
                    "summary": "One conversation's state",
                    "parameters": [{"$ref": "#/components/parameters/ConversationId"}],
                    "responses": {
                        "200": {"description": "The state", **_json("Conversation")},
                        **_errors(401, 404, 422, 503),
                    },
                }
            },
            "/conversations/{id}/history": {
                "get": {
                    "summary": "One conversation's history: periods, deliveries, attempts",
                    "parameters": [{"$ref": "#/components/parameters/ConversationId"}],
                    "responses": {
                        "200": {"description": "The history", **_json("History")},
                        **_errors(401, 404, 422, 503),
                    },
                }
            },
            "/events": {
                "post": {
                    "summary": f"Bulk ingest, at most {MAX_BATCH} events; one result per item",
                    "requestBody": {
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
                    "responses": {
                        "200": {"description": "Per-item results", **_json("BatchResult")},
                        **_errors(400, 401, 413, 415, 503),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/ready": {
                "get": {
                    "summary": "Redis reachable and led shards swept recently",
                    "security": [],
                    "responses": simple,
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of every process of the pod",
                    "security": [],
                    "responses": {"200": {"description": "Metrics"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
            **admin.paths(_errors, _json),  # the operator's /admin endpoints, the console
        },
    }
