"""Turn request JSON into events, or a RequestError that says exactly what is wrong."""

from __future__ import annotations

import time
from typing import Any

from tracker.errors import RequestError
from tracker.model import ID_PATTERN, AgentMessage, CustomerResponse, Event, valid_id
from tracker.settings import Settings
from tracker.timefmt import parse_rfc3339_ms

MAX_FUTURE_MS = 5 * 60_000
MAX_PAST_MS = 365 * 86_400_000
MAX_BATCH = 1000

#: Sentinel timestamp: the script uses Redis's clock.
NOW = 0


def invalid(message: str, code: str = "invalid_field") -> RequestError:
    return RequestError(422, code, message)


def check_id(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{field} must be a string matching {ID_PATTERN}")
    if not valid_id(value):
        raise invalid(f"{field} must match {ID_PATTERN}")
    return value


def _timestamp(body: dict[str, Any]) -> int:
    raw = body.get("timestamp")
    if raw is None:
        return NOW
    if not isinstance(raw, str):
        raise invalid("timestamp must be an RFC 3339 string with a time zone")
    try:
        ms = parse_rfc3339_ms(raw)
    except ValueError as exc:
        raise invalid(f"timestamp {exc}") from None
    now = int(time.time() * 1000)
    if ms > now + MAX_FUTURE_MS:
        raise invalid("timestamp is more than 5 minutes in the future")
    if ms < now - MAX_PAST_MS:
        raise invalid("timestamp is more than 365 days in the past")
    return ms


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_body", "the body must be a JSON object")
    return body


def agent_message(conversation_id: str, body: Any, settings: Settings) -> AgentMessage:
    return _agent_message(conversation_id, _object(body), settings)


def _agent_message(conversation_id: str, body: dict[str, Any], settings: Settings) -> AgentMessage:
    timeout = body.get("timeout_ms")
    if timeout is not None and (
        type(timeout) is not int
        or not settings.min_timeout_ms <= timeout <= settings.max_timeout_ms
    ):
        raise invalid(
            f"timeout_ms must be an integer from {settings.min_timeout_ms}"
            f" to {settings.max_timeout_ms}"
        )
    return AgentMessage(
        conversation_id=check_id(conversation_id, "conversation_id"),
        agent_id=check_id(body.get("agent_id"), "agent_id"),
        message_id=check_id(body.get("message_id"), "message_id"),
        timestamp_ms=_timestamp(body),
        timeout_ms=timeout,
    )


def customer_response(conversation_id: str, body: Any) -> CustomerResponse:
    return _customer_response(conversation_id, _object(body))


def _customer_response(conversation_id: str, body: dict[str, Any]) -> CustomerResponse:
    return CustomerResponse(
        conversation_id=check_id(conversation_id, "conversation_id"),
        customer_id=check_id(body.get("customer_id"), "customer_id"),
        message_id=check_id(body.get("message_id"), "message_id"),
        timestamp_ms=_timestamp(body),
    )


def batch_item(item: Any, settings: Settings) -> Event:
    item = _object(item)
    kind = item.get("type")
    conversation_id = item.get("conversation_id")
    if kind == "agent_message":
        return _agent_message(conversation_id, item, settings)
    if kind == "customer_response":
        return _customer_response(conversation_id, item)
    raise invalid("type must be agent_message or customer_response")


def batch(body: Any) -> list[Any]:
    if not isinstance(body, list):
        raise RequestError(400, "invalid_body", "the body must be a JSON array of events")
    if len(body) > MAX_BATCH:
        raise RequestError(413, "batch_too_large", f"at most {MAX_BATCH} events per request")
    return body
