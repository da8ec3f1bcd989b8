"""Error responses: a raised :class:`~gateway.errors.GatewayError` as the client's own envelope.

Each blueprint installs these handlers with its codec's ``error_body`` (:func:`install`), so a
Claude Code client on ``/v1/messages`` always gets Anthropic's envelope and Codex on
``/v1/responses`` its variant of OpenAI's, whatever raised: the view, the codec, the local-key
check before the view, or werkzeug (413 over ``max_body_mb``).  A blueprint gets all three
handlers (``GatewayError``, ``HTTPException``, any other ``Exception``) because Flask looks for a
handler in the blueprint before the app for each class of the exception's MRO: a blueprint with
only an ``Exception`` handler would also catch a 413 the app meant to handle.

A request that matches no route (a 404, or a 405 for a known path with the wrong method) has no
blueprint, so no blueprint's handler sees it: :data:`UNROUTED` decides its envelope by URL prefix,
the one place a path is looked at.  Everything else gets OpenAI's envelope.
"""
from __future__ import annotations

import json
import logging
from typing import Union

from flask import Blueprint, Flask, Response, current_app, has_request_context, request
from werkzeug.exceptions import HTTPException

from .. import access, errors
from ..codecs import anthropic_messages, openai_chat, openai_responses
from ..codecs.base import ErrorBody

log = logging.getLogger("gateway")

#: URL prefix -> envelope, for requests no route matched (checked in order, ``str.startswith``):
#: the prefixes the Anthropic and Responses blueprints serve.  Any other unrouted path gets
#: OpenAI's envelope (which, for the 401, 404 and 405 an unrouted request can get, is also what
#: the Responses envelope is: the two differ only on usage windows and overloads).
UNROUTED: tuple[tuple[str, ErrorBody], ...] = (
    ("/v1/messages", anthropic_messages.error_body),
    ("/v1/responses", openai_responses.error_body),
    ("/responses", openai_responses.error_body),
)


def respond(err: errors.GatewayError, error_body: ErrorBody) -> Response:
    """A complete response for ``err``: JSON envelope, status, ``Retry-After`` when known."""
    if has_request_context():
        access.record(request.environ)["error"] = err.code    # for the access line
    resp = Response(json.dumps(error_body(err)), status=err.status, mimetype="application/json")
    if err.retry_after is not None:
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp


def from_http(exc: HTTPException) -> errors.GatewayError:
    """werkzeug's own failures (no route, wrong method, body too large...) as gateway errors."""
    if exc.code == 404:
        return errors.NotFound(f"Unknown endpoint: {request.method} {request.path}",
                               code="unknown_url")
    if exc.code == 405:
        return errors.MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                       code="method_not_allowed")
    if exc.code == 413:
        limit = current_app.extensions["gateway"].config.max_body_mb
        return errors.RequestTooLarge(f"the request body is larger than {limit:g} MB "
                                      "(max_body_mb in the gateway's config)")
    return errors.error_for_status(exc.code or 500, exc.description or exc.name)


def install(target: Union[Flask, Blueprint], error_body: ErrorBody) -> None:
    """Answer every failure of ``target``'s requests with ``error_body``'s envelope."""

    def gateway_error(err: errors.GatewayError) -> Response:
        if err.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, err.status, err.code)
        return respond(err, error_body)

    def http_error(exc: HTTPException) -> Response:
        return respond(from_http(exc), error_body)

    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return respond(errors.GatewayError("internal gateway error", code="internal_error"),
                       error_body)

    target.register_error_handler(errors.GatewayError, gateway_error)
    target.register_error_handler(HTTPException, http_error)
    target.register_error_handler(Exception, unexpected)


def unrouted_body(err: errors.GatewayError) -> dict:
    """The envelope for a request without a blueprint: by :data:`UNROUTED`, else OpenAI's."""
    path = request.path
    for prefix, error_body in UNROUTED:
        if path.startswith(prefix):
            return error_body(err)
    return openai_chat.error_body(err)


def install_unrouted(app: Flask) -> None:
    """The app-level handlers: they only see requests that no blueprint's handlers took."""
    install(app, unrouted_body)
