"""The web console: a page and its script, shipped in the package (no build step, nothing
fetched from elsewhere), and who may use it.

The page itself holds no data, so it is served to anyone; it asks for a token and reads
everything through the `/admin/...` JSON endpoints, which need one. `CONSOLE_TOKEN` is a
read-only token: it may GET under /admin and /console, nothing else.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from tracker.errors import RequestError

PAGE = "/console"
ASSETS = {  # path -> (file, content type)
    PAGE: ("index.html", "text/html; charset=utf-8"),
    f"{PAGE}/console.js": ("console.js", "text/javascript; charset=utf-8"),
    f"{PAGE}/console.css": ("console.css", "text/css; charset=utf-8"),
}
READ_ONLY_PREFIXES = ("/admin/", f"{PAGE}/")
#: Only the package's own script and style; no inline script, no other origin, no framing.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_asset(path: str) -> bool:
    """A console file: served without a token (it holds no data)."""
    return path in ASSETS


def check_read_only(request: web.Request) -> None:
    """A CONSOLE_TOKEN may only read the console's endpoints: anything else is 403."""
    path = request.path
    reads = request.method in ("GET", "HEAD")
    if not (reads and (path == PAGE or path.startswith(READ_ONLY_PREFIXES))):
        raise RequestError(403, "forbidden", "the console token only reads /admin and /console")


@functools.cache
def _body(name: str) -> bytes:
    return (resources.files(__name__) / name).read_bytes()


async def asset(request: web.Request) -> web.Response:
    name, content_type = ASSETS[request.path]
    return web.Response(body=_body(name), headers={"Content-Type": content_type, **HEADERS})
