"""The HTTP ceiling: a bare aiohttp + uvloop handler with the tracker's route and JSON shape.

`python -m bench.bare_server PORT`: parses the body, answers a small JSON object, no Redis.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web


async def agent_message(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    result = {"conversation_id": request.match_info["id"], "status": "started", "agent": body}
    return web.Response(body=orjson.dumps(result), content_type="application/json")


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/conversations/{id}/agent-message", agent_message)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    await asyncio.Event().wait()  # until SIGTERM


def main() -> int:
    uvloop.run(serve(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
