"""What the local web pages share: an online endpoint's ``/ui`` (online/ui.py) and the batch
jobs' page of ``batch-endpoint ui`` (batch/ui.py), which may not import each other.

Each page is one self-contained HTML file of package data, answered under a
Content-Security-Policy that lets it run only its own inline script and style and reach only
the server it came from; its data routes answer JSON, a refusal as ``{"message": ...}``; both
show the last lines of a log (``logs.tail``, as get-logs reads them).
"""
from importlib import resources
from typing import Union

from aiohttp import web

__all__ = ["page", "answer", "asked_lines", "LOG_LINES", "MAX_LOG_LINES"]

LOG_LINES = 100  # lines a page shows of a log unless it asks for another number
MAX_LOG_LINES = 2000
# the page's own script and style only, inline; data from the server it came from
_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
           "img-src data:; connect-src 'self'")


def page(package: str, name: str) -> web.Response:
    """The page ``name``, package data of ``package``, never cached (a new version shows)."""
    text = resources.files(package).joinpath(name).read_bytes()
    return web.Response(body=text, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": _POLICY})


def answer(status: int, message: str) -> web.Response:
    """A data route's refusal: the status and one readable line."""
    return web.json_response({"message": message}, status=status)


def asked_lines(request: web.Request) -> Union[int, web.Response]:
    """The number of log lines the query asks for (``lines``, default LOG_LINES), or the 400."""
    try:
        count = int(request.query.get("lines", LOG_LINES))
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_LOG_LINES:
        return answer(400, "'lines' must be an integer from 1 to {}.".format(MAX_LOG_LINES))
    return count
