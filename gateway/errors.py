"""One exception hierarchy for every failure, and one helper that turns it into a wire envelope.

Every error the gateway reports -- a malformed request, a bad local key, an upstream 429, a stream
that ended without ``finish`` -- is raised as a :class:`GatewayError` subclass carrying an HTTP
status.  The client's codec never builds error bodies by hand: it calls :func:`envelope` with the
flavour of its surface, so an OpenAI client always sees ``{"error": {...}}`` and an Anthropic
client always sees ``{"type": "error", "error": {...}}``, with types that match the status.
"""
from __future__ import annotations

import json
import time

from flask import Response


class GatewayError(Exception):
    """Base class: ``status`` is the HTTP status the client gets, ``code`` a stable machine code."""

    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    default_code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after: int | None = None, status: int | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after
        self.details = details      # machine-readable extras a client acts on (Anthropic threads)
        if status is not None:
            self.status = status


class InvalidRequest(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    default_code = "invalid_api_key"


class InsufficientCredits(GatewayError):
    """402: the Command Code account has no credits left; retrying will not help."""

    status = 402
    openai_type = "insufficient_quota"
    anthropic_type = "billing_error"
    default_code = "insufficient_quota"


class PermissionDenied(GatewayError):
    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class NotFound(GatewayError):
    status = 404
    openai_type = "not_found_error"
    anthropic_type = "not_found_error"


class MethodNotAllowed(GatewayError):
    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class RequestTimeout(GatewayError):
    """408: the client stopped sending its request before it was complete."""

    status = 408
    openai_type = "invalid_request_error"
    anthropic_type = "timeout_error"
    default_code = "request_timeout"


class RequestTooLarge(GatewayError):
    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class NotConfigured(GatewayError):
    """503: the gateway itself lacks something (the Command Code key) to serve the request."""

    status = 503
    openai_type = "server_error"
    anthropic_type = "api_error"


class AtCapacity(GatewayError):
    """503: every stream slot of this worker is busy; retry shortly (Retry-After)."""

    status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    default_code = "gateway_at_capacity"


class ShuttingDown(GatewayError):
    """503: the worker is stopping and this answer could not finish before its deadline."""

    status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    default_code = "gateway_restarting"


class UpstreamError(GatewayError):
    """502: Command Code failed, answered something we cannot use, or cut the stream short."""

    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"
    default_code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    anthropic_type = "timeout_error"
    default_code = "upstream_timeout"


class Overloaded(UpstreamError):
    status = 529
    anthropic_type = "overloaded_error"
    default_code = "overloaded"


_BY_STATUS = {cls.status: cls for cls in (
    InvalidRequest, AuthenticationFailed, InsufficientCredits, PermissionDenied, NotFound,
    MethodNotAllowed, RequestTooLarge, RateLimited, NotConfigured, UpstreamTimeout, Overloaded)}


def error_for_status(status: int, message: str, **kw) -> GatewayError:
    """The exception class that fits ``status``; unknown 4xx stay 4xx, unknown 5xx become 502."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls(message, **kw)
    if 400 <= status < 500:
        return InvalidRequest(message, status=status, **kw)
    return UpstreamError(message, **kw)


OPENAI = "openai"
ANTHROPIC = "anthropic"
RESPONSES = "responses"     # OpenAI's envelope, with what Codex reads on top


def envelope(err: GatewayError, flavor: str = OPENAI) -> dict:
    """The error body in the client's own shape.

    On the Responses surface a plan's usage window is ``type: "usage_limit_reached"`` with
    ``resets_at`` (epoch seconds), which Codex shows instead of retrying, and an overload is
    ``code: "server_is_overloaded"``, which Codex backs off from.
    """
    if flavor == ANTHROPIC:
        body = {"type": err.anthropic_type, "message": err.message}
        if err.details:
            body["details"] = err.details
        return {"type": "error", "error": body}
    body = {"message": err.message, "type": err.openai_type, "code": err.code, "param": err.param}
    if flavor == RESPONSES:
        if err.code == "usage_limit_reached":
            body["type"] = "usage_limit_reached"
            if err.retry_after is not None:
                body["resets_at"] = int(time.time()) + err.retry_after
        elif isinstance(err, (Overloaded, AtCapacity)):
            body["code"] = "server_is_overloaded"
    return {"error": body}


def error_response(err: GatewayError, flavor: str = OPENAI) -> Response:
    """A complete Flask response for ``err``: JSON envelope, status, ``Retry-After`` when known."""
    resp = Response(json.dumps(envelope(err, flavor)), status=err.status,
                    mimetype="application/json")
    if err.retry_after is not None:
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp
