"""The gateway's exception hierarchy: every failure, as plain data, for every surface.

Every error the gateway reports -- a malformed request, a bad local key, an upstream 429, a stream
that ended without ``finish`` -- is raised as a :class:`GatewayError` subclass.  Like
``requests.exceptions``, this module holds only the classes: what a failure *is* (its HTTP
``status``, the type names each API family uses for it, a stable default ``code``, and for the
client ``retry_after`` and machine-readable ``details``), never how it is written on the wire.
The envelope is the client codec's business -- ``{"error": {...}}`` in
:mod:`gateway.codecs.openai_chat`, ``{"type": "error", "error": {...}}`` in
:mod:`gateway.codecs.anthropic_messages`, Codex's variants in
:mod:`gateway.codecs.openai_responses` -- so an upstream route or a store can raise without
knowing which client is waiting, and nothing here needs Flask.
"""
from __future__ import annotations


class GatewayError(Exception):
    """Base class: ``status`` is the HTTP status the client gets, ``code`` a stable machine code.

    ``openai_type`` and ``anthropic_type`` are the ``error.type`` each family of APIs uses for
    this kind of failure, so the envelopes never have to map statuses to types themselves.
    """

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
        self.retry_after = retry_after  # seconds; sent as Retry-After, and Codex's resets_at
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
