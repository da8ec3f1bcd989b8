"""Turn what Command Code says when it fails into the gateway's exceptions.

Command Code reports failures three ways: an HTTP error status with a JSON (or, from its edge,
HTML) body; an in-band ``{"type":"error"}`` line inside a 200 stream; and a ``finish`` whose
reason says the model call broke; and transport's neutral exceptions say what never arrived.
All of them end up here so that a given failure gets the same status, code and advice on every
surface.  Messages say what to do, never echo a key.  :func:`classify` is a table of rules
(:data:`_RULES`) read top to bottom, so what decides a failure can be read in one place.
"""
from __future__ import annotations

import json
import re
import time
from typing import Callable, Container, NamedTuple

from .. import errors, transport

_EMBEDDED = re.compile(r"^\s*(\d{3})\s+(\{.*\})\s*$", re.S)
_PLAN_PREFIX = re.compile(r"^\s*MODEL_NOT_IN_PLAN:\s*", re.I)
_MAX_MESSAGE = 500
#: an error's ``type`` -> its status, for in-band errors that carry no status (Provider API streams)
_TYPE_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "overloaded_error": 529, "insufficient_quota": 402,
                "billing_error": 402}


#: A plan's usage window, as Command Code words it: "You've reached your 5-hour usage limit.
#: Resets in 2m." (the CLI route also sends it structured, in ``rateLimit``)
_WINDOW = re.compile(r"\busage limit\b", re.I)
_RESETS_IN = re.compile(r"\bresets in (\d+)\s*([smhd])", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _retry_after(rate_limit) -> int | None:
    if not isinstance(rate_limit, dict):
        return None
    reset = rate_limit.get("reset")
    if not isinstance(reset, (int, float)):
        return None
    if reset > 1e12:        # milliseconds, as the billing endpoints use
        reset /= 1000
    return max(1, int(reset - time.time()))


def _parse_body(body: bytes | str | None) -> dict | None:
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class _Failure(NamedTuple):
    """A failure as the rules read it: its words lowercased, ``text`` as a client is told it."""

    status: int
    message: str
    code: str | None
    type_: str | None
    rate_limit: object

    @property
    def low(self) -> str:
        return self.message.lower()

    @property
    def code_low(self) -> str:
        return (self.code or "").lower()

    @property
    def type_low(self) -> str:
        return (self.type_ or "").lower()

    @property
    def text(self) -> str:
        return f"Command Code: {self.message}"


class _Rule(NamedTuple):
    """One row of :data:`_RULES`: when it applies, and the error it gives.

    It applies when the status is one of ``statuses``, or upstream's code is one of ``codes``,
    or its type one of ``types``, or the lowercased message contains one of ``words``; a row
    with none of them always applies.  ``error`` is a GatewayError class, given
    ``"Command Code: <message>" + advice`` and ``code`` (None: the class's own), or, for the rows
    that need more of the failure, a function of it.
    """

    error: type | Callable[[_Failure], errors.GatewayError]
    code: str | None = None
    advice: str = ""
    statuses: Container[int] = ()
    codes: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    def applies(self, f: _Failure) -> bool:
        if not (self.statuses or self.codes or self.types or self.words):
            return True
        return (f.status in self.statuses or f.code_low in self.codes
                or f.type_low in self.types or any(w in f.low for w in self.words))

    def build(self, f: _Failure) -> errors.GatewayError:
        if isinstance(self.error, type):
            return self.error(f.text + self.advice, code=self.code)
        return self.error(f)


def _not_in_plan(f: _Failure) -> errors.GatewayError:
    return errors.PermissionDenied(
        f"Command Code: {_PLAN_PREFIX.sub('', f.message)}. Pick a model your plan includes "
        "(GET /v1/models lists them with their minimum plan), or map the ids your client "
        "sends to one in the gateway's config.yaml, e.g. model_map: {\"claude-*\": "
        "\"deepseek/deepseek-v4-pro\"} for Claude Code on the Go plan.",
        code="model_not_in_plan")


def _rate_limited(f: _Failure) -> errors.GatewayError:
    retry_after = _retry_after(f.rate_limit)
    window = f.rate_limit.get("window") if isinstance(f.rate_limit, dict) else None
    if window is None and _WINDOW.search(f.message):       # the Provider API says it in words
        window = "usage window"
        resets = _RESETS_IN.search(f.message)
        if retry_after is None and resets:
            retry_after = int(resets.group(1)) * _UNIT_SECONDS[resets.group(2).lower()]
    return errors.RateLimited(f.text, retry_after=retry_after,
                              code="usage_limit_reached" if window else "rate_limit_exceeded")


def _forbidden(f: _Failure) -> errors.GatewayError:
    return errors.PermissionDenied(f.text, code=f.code_low or "forbidden")


def _by_status(f: _Failure) -> errors.GatewayError:
    return errors.error_for_status(f.status, f.text,
                                   code=(f.code or f.type_ or "").lower() or None)


#: Command Code's failures, first matching row wins: what the message or code says beats the
#: status (an out-of-credits 400 is still out of credits), then the status alone decides.
_RULES = (
    _Rule(errors.InsufficientCredits, None,
          ". The Command Code account is out of credits: add credits or wait for the plan's "
          "credits to renew.",
          statuses={402}, words=("insufficient credits", "insufficient balance")),
    _Rule(_not_in_plan, codes=("model_not_in_plan",), words=("model_not_in_plan",)),
    _Rule(errors.PermissionDenied, "premium_credits_exhausted",
          ". Your plan's premium allowance is used up: pick an open-source model or wait for "
          "it to reset.",
          words=("premium_credits_exhausted",)),
    _Rule(errors.PermissionDenied, "upgrade_required",
          ". Command Code asks for a newer client: raise commandcode.cli_version in the "
          "gateway's config to the current Command Code CLI version.",
          codes=("upgrade_required",), types=("upgrade_required",), words=("upgrade_required",)),
    _Rule(errors.AuthenticationFailed, "upstream_authentication_failed",
          ". Command Code rejected the Command Code API key this request used (the caller's "
          "own key, or the gateway's: commandcode.api_key or COMMAND_CODE_API_KEY).",
          statuses={401}),
    _Rule(_rate_limited, statuses={429}),
    _Rule(_forbidden, statuses={403}),
    _Rule(errors.UpstreamTimeout, statuses={408}),
    _Rule(errors.Overloaded, statuses={529}, words=("overloaded",)),
    _Rule(errors.UpstreamError, "upstream_not_found", " (check commandcode.base_url)",
          statuses={404}),
    _Rule(_by_status, statuses=range(400, 500)),
    _Rule(errors.UpstreamError),
)


def _unwrap(status: int, message: str, type_: str | None) -> tuple[int, str, str | None]:
    """The real status, message and type of errors that arrive wrapped in another's message."""
    if message.startswith("{"):     # a JSON error double-encoded in the message (Provider API)
        inner = (_parse_body(message) or {}).get("error")
        if isinstance(inner, dict) and inner.get("message"):
            type_ = inner.get("type") or type_
            message = str(inner["message"]).strip()
            if status >= 500 and isinstance(type_, str):    # the inner error knows better
                status = _TYPE_STATUS.get(type_.lower(), status)
    message = message[:_MAX_MESSAGE] or f"HTTP {status}"
    embedded = _EMBEDDED.match(message)
    if embedded:                    # '429 {"error":{"type":"rate_limit_error","message":"slow down"}}'
        status = int(embedded.group(1))
        inner = (_parse_body(embedded.group(2)) or {}).get("error")
        if isinstance(inner, dict):
            type_ = inner.get("type") or type_
            message = f"{type_}: {inner.get('message', '')}" if type_ else str(inner.get("message", message))
    return status, message, type_


def classify(status: int, message: str, *, code: str | None = None, type_: str | None = None,
             rate_limit=None) -> errors.GatewayError:
    """The gateway exception for a Command Code failure of ``status`` with ``message``."""
    code = code if isinstance(code, str) else None          # some envelopes put a number there
    type_ = type_ if isinstance(type_, str) else None
    status, message, type_ = _unwrap(status, (message or "").strip(), type_)
    failure = _Failure(status, message, code, type_ if isinstance(type_, str) else None,
                       rate_limit)
    return next(rule for rule in _RULES if rule.applies(failure)).build(failure)


def from_http(status: int, body: bytes) -> errors.GatewayError:
    """An HTTP error answer: ``{"success":false,"error":{"code","status","message",...}}`` or not JSON."""
    data = _parse_body(body)
    err = data.get("error") if data else None
    if isinstance(err, str):
        return classify(status, err)
    if not isinstance(err, dict):
        message = (data or {}).get("message") if data else None
        return classify(status, message if isinstance(message, str)
                        else f"HTTP {status} with a body that is not Command Code JSON")
    if isinstance(err.get("status"), int):
        status = err["status"]
    return classify(status, str(err.get("message") or ""), code=err.get("code"),
                    type_=err.get("type"), rate_limit=err.get("rateLimit"))


def from_inband(error) -> errors.GatewayError:
    """An in-band error: the CLI's ``{"type":"error","error":...}`` line (a string, or an object
    with ``statusCode``), or the ``error`` member of a Provider API stream (status from its type)."""
    if isinstance(error, dict):
        status = error.get("statusCode") or error.get("status")
        if not isinstance(status, int) and isinstance(error.get("code"), int) \
                and 400 <= error["code"] < 600:
            status = error["code"]          # a numeric code is the HTTP status (OpenRouter style)
        if not isinstance(status, int):
            status = _TYPE_STATUS.get(str(error.get("type") or "").lower(), 500)
        return classify(status, str(error.get("message") or ""),
                        code=error.get("code"), type_=error.get("type"),
                        rate_limit=error.get("rateLimit"))
    return classify(500, str(error or "upstream error"))


class NoProviderAccess(errors.PermissionDenied):
    """The key's plan has no Provider API (the Go plan answers ``403 upgrade_required``): the
    one failure after which ``auto`` tries the CLI route instead."""

    default_code = "upgrade_required"


def no_provider_access(err: errors.GatewayError) -> errors.GatewayError:
    """``err``, or :class:`NoProviderAccess` when it is the Provider API's ``upgrade_required``."""
    if not isinstance(err, errors.PermissionDenied) or err.code != "upgrade_required":
        return err
    return NoProviderAccess(
        "Command Code: this key's plan has no Provider API access (the Go plan answers "
        "403 upgrade_required). Set commandcode.mode to auto or cli in the gateway's "
        "config to use the CLI route, or upgrade the plan.")


# ---- transport failures ------------------------------------------------------------------------

def _cannot_reach(exc: transport.ConnectFailed) -> errors.GatewayError:
    return errors.UpstreamError(f"cannot reach Command Code at {exc.where} ({exc.cause})")


def _not_json(exc: transport.NotJSON) -> errors.GatewayError:
    return errors.UpstreamError(f"Command Code answered {exc.path} with something that is not JSON")


#: what a request that got no usable answer means, by the class of transport's exception
_SENDING = (
    (transport.StatusError, lambda exc: from_http(exc.status, exc.body)),
    (transport.ConnectTimedOut,
     lambda exc: errors.UpstreamTimeout("Command Code did not accept the connection in time")),
    (transport.TimedOut, lambda exc: errors.UpstreamTimeout("Command Code did not answer in time")),
    (transport.NotJSON, _not_json),
    (transport.ConnectFailed, _cannot_reach),
)

#: what a body that stopped arriving means
_READING = (
    (transport.TimedOut, lambda exc: errors.UpstreamTimeout(
        "Command Code went silent for longer than commandcode.idle_timeout")),
    (transport.TransportError, lambda exc: errors.UpstreamError(
        f"the Command Code stream broke off ({exc.cause})")),
)


def from_transport(exc: transport.TransportError, *, reading: bool = False) -> errors.GatewayError:
    """The gateway error for what transport raised: sending a request (and waiting for its
    answer's headers), or, with ``reading``, while its body was being read."""
    for cls, build in _READING if reading else _SENDING:
        if isinstance(exc, cls):
            return build(exc)
    return errors.UpstreamError(f"cannot reach Command Code ({exc.cause})")
