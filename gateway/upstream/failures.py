"""Turn what Command Code says when it fails into the gateway's exceptions.

Command Code reports failures three ways: an HTTP error status with a JSON (or, from its edge,
HTML) body; an in-band ``{"type":"error"}`` line inside a 200 stream; and a ``finish`` whose
reason says the model call broke.  All of them end up here so that a given failure gets the same
status, code and advice on every surface.  Messages say what to do, never echo a key.
"""
from __future__ import annotations

import json
import re
import time

from .. import errors

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


def classify(status: int, message: str, *, code: str | None = None, type_: str | None = None,
             rate_limit=None) -> errors.GatewayError:
    """The gateway exception for a Command Code failure of ``status`` with ``message``."""
    code = code if isinstance(code, str) else None          # some envelopes put a number there
    type_ = type_ if isinstance(type_, str) else None
    message = (message or "").strip()
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
    low = message.lower()
    code_low = (code or "").lower()
    text = f"Command Code: {message}"

    if status == 402 or "insufficient credits" in low or "insufficient balance" in low:
        return errors.InsufficientCredits(
            f"{text}. The Command Code account is out of credits: add credits or wait for the plan's "
            "credits to renew.")
    if code_low == "model_not_in_plan" or "model_not_in_plan" in low:
        return errors.PermissionDenied(
            f"Command Code: {_PLAN_PREFIX.sub('', message)}. Pick a model your plan includes "
            "(GET /v1/models lists them with their minimum plan), or map the ids your client "
            "sends to one in the gateway's config.yaml, e.g. model_map: {\"claude-*\": "
            "\"deepseek/deepseek-v4-pro\"} for Claude Code on the Go plan.",
            code="model_not_in_plan")
    if "premium_credits_exhausted" in low:
        return errors.PermissionDenied(
            f"{text}. Your plan's premium allowance is used up: pick an open-source model or wait "
            "for it to reset.", code="premium_credits_exhausted")
    if code_low == "upgrade_required" or (type_ or "").lower() == "upgrade_required" \
            or "upgrade_required" in low:
        return errors.PermissionDenied(
            f"{text}. Command Code asks for a newer client: raise commandcode.cli_version in the "
            "gateway's config to the current Command Code CLI version.", code="upgrade_required")
    if status == 401:
        return errors.AuthenticationFailed(
            f"{text}. Command Code rejected the Command Code API key this request used (the "
            "caller's own key, or the gateway's: commandcode.api_key or COMMAND_CODE_API_KEY).",
            code="upstream_authentication_failed")
    if status == 429:
        retry_after = _retry_after(rate_limit)
        window = rate_limit.get("window") if isinstance(rate_limit, dict) else None
        if window is None and _WINDOW.search(message):     # the Provider API says it in words
            window = "usage window"
            resets = _RESETS_IN.search(message)
            if retry_after is None and resets:
                retry_after = int(resets.group(1)) * _UNIT_SECONDS[resets.group(2).lower()]
        return errors.RateLimited(text, retry_after=retry_after,
                                  code="usage_limit_reached" if window else "rate_limit_exceeded")
    if status == 403:
        return errors.PermissionDenied(text, code=code_low or "forbidden")
    if status == 408:
        return errors.UpstreamTimeout(text)
    if status == 529 or "overloaded" in low:
        return errors.Overloaded(text)
    if status == 404:
        return errors.UpstreamError(f"{text} (check commandcode.base_url)", code="upstream_not_found")
    if 400 <= status < 500:
        return errors.error_for_status(status, text, code=(code or type_ or "").lower() or None)
    return errors.UpstreamError(text)


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
