"""A streamed answer as a Flask response: the one place the call meets the web framework.

:func:`gateway.chat.stream` opens the call and gives back its encoded bytes; this wraps them in
an SSE response that keeps the request context while the body is produced (the codecs' callbacks
log through the app) and frees the stream slot when the response is closed, even if the server
never iterated the body.
"""
from __future__ import annotations

from flask import Response, stream_with_context

from .. import chat
from ..canonical import ChatRequest
from ..codecs.base import EventEncoder

#: No caching, and no buffering by nginx (``X-Accel-Buffering``): each event goes out at once.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_response(gw: chat.Gateway, req: ChatRequest, encoder: EventEncoder,
                    environ: dict) -> Response:
    """An SSE response relaying ``req``'s events through ``encoder`` as they arrive; an error
    before the first event is raised here, so it gets a real status."""
    body, release = chat.stream(gw, req, encoder, environ)
    resp = Response(stream_with_context(body), mimetype="text/event-stream", headers=SSE_HEADERS)
    resp.call_on_close(release)        # also when the body is never iterated
    return resp
