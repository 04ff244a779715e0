"""A small webhook receiver for the compose stack: verifies, dedupes and logs notifications.

Standard library only, so it runs on a stock Python image. It checks each request's
Standard Webhooks signature (HMAC-SHA256 over ``id.timestamp.body`` with
WEBHOOK_SECRET) and timestamp, drops repeats of an ``event_id`` it has seen (the
tracker delivers at least once), and logs one JSON line per notification.

Environment: PORT (9000), WEBHOOK_SECRET (``whsec_<base64>``, comma-separated while
rotating), REJECT_PREFIX (conversation ids starting with it are refused with 410,
a permanent failure, to show dead letters; empty: accept everything).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

TOLERANCE_S = 300
SEEN_MAX = 100_000


def decode_secret(secret: str) -> bytes:
    return base64.b64decode(secret.strip().removeprefix("whsec_") + "==")


def expected_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def verify(keys: list[bytes], headers: Any, body: bytes, now: float) -> str | None:
    """None when the request is authentic, else why not."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    given = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
    if not msg_id or not timestamp.isdigit():
        return "missing webhook-id or webhook-timestamp"
    if abs(now - int(timestamp)) > TOLERANCE_S:
        return "timestamp outside tolerance"
    for key in keys:
        want = expected_signature(key, msg_id, timestamp, body)
        if any(hmac.compare_digest(want, sig) for sig in given):
            return None
    return "bad signature"


class Seen:
    """The event ids already accepted (bounded, oldest forgotten first)."""

    def __init__(self) -> None:
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()

    def add(self, event_id: str) -> bool:
        """True when ``event_id`` is new."""
        with self.lock:
            if event_id in self.ids:
                return False
            self.ids[event_id] = None
            if len(self.ids) > SEEN_MAX:
                self.ids.popitem(last=False)
            return True


def log(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    keys: ClassVar[list[bytes]] = []
    reject_prefix: ClassVar[str] = ""
    seen: ClassVar[Seen] = Seen()

    def do_GET(self) -> None:
        self.reply(200 if self.path == "/health" else 404)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        problem = verify(self.keys, self.headers, body, time.time())
        if problem is not None:
            log(msg="rejected", reason=problem, webhook_id=self.headers.get("webhook-id"))
            self.reply(401)
            return
        event = json.loads(body)
        conversation = str(event.get("conversation_id", ""))
        if self.reject_prefix and conversation.startswith(self.reject_prefix):
            log(msg="refused", event_id=event.get("event_id"), conversation_id=conversation)
            self.reply(410)
            return
        if not self.seen.add(str(event.get("event_id"))):
            log(msg="duplicate", event_id=event.get("event_id"))
            self.reply(200)
            return
        log(msg="notification", **event)
        self.reply(204)

    def reply(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """One line per notification is enough: no access log."""


def main() -> None:
    secrets = [s for s in os.environ.get("WEBHOOK_SECRET", "").split(",") if s.strip()]
    if not secrets:
        sys.exit("webhook_receiver: WEBHOOK_SECRET is required")
    Handler.keys = [decode_secret(s) for s in secrets]
    Handler.reject_prefix = os.environ.get("REJECT_PREFIX", "")
    port = int(os.environ.get("PORT", "9000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(msg="listening", port=port)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
