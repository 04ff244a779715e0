"""Run the API application on uvloop until told to stop."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from tracker.api import create_app
from tracker.settings import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event, shutdown_timeout: float) -> None:
    """Serve on HOST:PORT (SO_REUSEPORT, so several API processes can share it)."""
    runner = web.AppRunner(
        create_app(settings),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=2048)
        await site.start()
        log.info(
            "api listening host=%s port=%d pod=%s", settings.host, settings.port, settings.pod_id
        )
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("api stopped pod=%s", settings.pod_id)
