"""How Command Code's failures become the gateway's (gateway/upstream/failures.py): in-band
errors, HTTP envelopes, double-encoded and embedded errors."""
from __future__ import annotations

import json

import pytest

from gateway import errors
from gateway.upstream import failures


# ---- failures --------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_, cls, status, code", [
    ("rate_limit_error", errors.RateLimited, 429, "rate_limit_exceeded"),
    ("overloaded_error", errors.Overloaded, 529, "overloaded"),
    ("authentication_error", errors.AuthenticationFailed, 401, "upstream_authentication_failed"),
    ("permission_error", errors.PermissionDenied, 403, "forbidden"),
    ("not_found_error", errors.UpstreamError, 502, "upstream_not_found"),
    ("request_too_large", errors.RequestTooLarge, 413, "request_too_large"),
    ("invalid_request_error", errors.InvalidRequest, 400, "invalid_request_error"),
    ("insufficient_quota", errors.InsufficientCredits, 402, "insufficient_quota"),
    ("billing_error", errors.InsufficientCredits, 402, "insufficient_quota"),
    ("api_error", errors.UpstreamError, 502, "upstream_error"),
    ("server_error", errors.UpstreamError, 502, "upstream_error"),
    (None, errors.UpstreamError, 502, "upstream_error"),
    ("RATE_LIMIT_ERROR", errors.RateLimited, 429, "rate_limit_exceeded"),
])
def test_from_inband_infers_the_status_from_the_type(type_, cls, status, code):
    err = failures.from_inband({"type": type_, "message": "something happened"})
    assert type(err) is cls and err.status == status and err.code == code
    assert "something happened" in err.message


def test_from_inband_an_explicit_status_wins_over_the_type():
    err = failures.from_inband({"statusCode": 429, "type": "invalid_request_error", "message": "m"})
    assert isinstance(err, errors.RateLimited)
    err = failures.from_inband({"status": 401, "type": "rate_limit_error", "message": "m"})
    assert isinstance(err, errors.AuthenticationFailed)
    err = failures.from_inband({"status": "429", "type": "overloaded_error", "message": "m"})
    assert isinstance(err, errors.Overloaded)       # a non-integer status is ignored


@pytest.mark.parametrize("error, cls, status, code", [
    ({"code": 429, "message": "Rate limited upstream"}, errors.RateLimited, 429,
     "rate_limit_exceeded"),
    ({"code": 502, "message": "Provider returned error"}, errors.UpstreamError, 502,
     "upstream_error"),
    ({"code": 400, "message": "bad", "type": "invalid_request_error"}, errors.InvalidRequest, 400,
     "invalid_request_error"),
    ({"code": 7, "type": "overloaded_error", "message": "m"}, errors.Overloaded, 529, "overloaded"),
    ({"code": 404, "status": 429, "message": "m"}, errors.RateLimited, 429, "rate_limit_exceeded"),
    ({"code": {"odd": 1}, "type": ["odd"], "message": "m"}, errors.UpstreamError, 502,
     "upstream_error"),
])
def test_from_inband_a_numeric_code_is_a_status_not_a_crash(error, cls, status, code):
    err = failures.from_inband(error)       # OpenRouter-style envelopes number their codes
    assert type(err) is cls and err.status == status and err.code == code


def test_from_http_a_numeric_code_is_ignored_not_a_crash():
    err = failures.from_http(400, b'{"error":{"code":400,"message":"bad field"}}')
    assert type(err) is errors.InvalidRequest and err.code is None
    assert err.message == "Command Code: bad field"


def test_from_inband_strings_and_messages():
    err = failures.from_inband("model call failed")
    assert type(err) is errors.UpstreamError and err.message == "Command Code: model call failed"
    assert failures.from_inband(None).message == "Command Code: upstream error"
    err = failures.from_inband({"type": "invalid_request_error", "message": "Insufficient credits"})
    assert isinstance(err, errors.InsufficientCredits) and err.status == 402
    err = failures.from_inband({"type": "invalid_request_error", "message": "x" * 2000})
    assert len(err.message) < 600


@pytest.mark.parametrize("message, cls, status, code, text", [
    ('{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}',
     errors.InvalidRequest, 400, "invalid_request_error", "Command Code: prompt is too long"),
    ('{"error":{"message":"Insufficient credits","type":"invalid_request_error"}}',
     errors.InsufficientCredits, 402, "insufficient_quota", "Command Code: Insufficient credits"),
    ('  {"error":{"type":"upgrade_required","message":"Upgrade to Pro"}}',
     errors.PermissionDenied, 403, "upgrade_required", "Command Code: Upgrade to Pro"),
    ('{"error":{"message":"Overloaded"}}', errors.Overloaded, 529, "overloaded",
     "Command Code: Overloaded"),
    ('{"not": "an error"}', errors.InvalidRequest, 400, None, 'Command Code: {"not": "an error"}'),
    ('{broken json', errors.InvalidRequest, 400, None, "Command Code: {broken json"),
    ('{"error":"just a string"}', errors.InvalidRequest, 400, None,
     'Command Code: {"error":"just a string"}'),
])
def test_classify_unwraps_a_double_encoded_json_error(message, cls, status, code, text):
    err = failures.classify(400 if cls is not errors.PermissionDenied else 403, message)
    assert type(err) is cls and err.status == status and err.code == code
    assert err.message.startswith(text)


@pytest.mark.parametrize("kw", [
    {"code": "upgrade_required"}, {"code": "UPGRADE_REQUIRED"}, {"type_": "upgrade_required"},
    {"message": "Your plan needs an upgrade (upgrade_required)"},
    {"message": "403 {\"error\":{\"type\":\"upgrade_required\",\"message\":\"no API\"}}"},
])
def test_classify_detects_upgrade_required_in_code_type_or_text(kw):
    message = kw.pop("message", "Your plan has no API access")
    err = failures.classify(403, message, **kw)
    assert type(err) is errors.PermissionDenied and err.code == "upgrade_required"
    assert "cli_version" in err.message


def test_classify_an_embedded_status_and_json_still_work_with_double_encoding():
    err = failures.classify(500, '429 {"error":{"type":"rate_limit_error","message":"slow down"}}')
    assert isinstance(err, errors.RateLimited)
    assert err.message == "Command Code: rate_limit_error: slow down"
    inner = json.dumps({"error": {"type": "api_error",
                                  "message": '529 {"error":{"type":"overloaded_error","message":"busy"}}'}})
    err = failures.classify(500, inner)
    assert isinstance(err, errors.Overloaded) and err.status == 529
    assert err.message == "Command Code: overloaded_error: busy"


def test_upgrade_required_from_both_provider_error_envelopes():
    openai_shape = {"error": {"message": "Upgrade to use the API", "type": "permission_error",
                              "code": "upgrade_required", "param": None}}
    err = failures.from_http(403, json.dumps(openai_shape).encode())
    assert err.code == "upgrade_required" and err.status == 403
    anthropic_shape = {"type": "error", "error": {"type": "permission_error", "message": json.dumps(
        {"type": "error", "error": {"type": "upgrade_required", "message": "Go plan"}})}}
    err = failures.from_http(403, json.dumps(anthropic_shape).encode())
    assert err.code == "upgrade_required" and "Go plan" in err.message
    err = failures.from_inband({"type": "upgrade_required", "message": "Upgrade"})
    assert type(err) is errors.PermissionDenied and err.code == "upgrade_required"
    # a plain 403 is not mistaken for it
    assert failures.from_http(403, b'{"error":{"type":"permission_error","message":"no"}}').code \
        == "forbidden"


def test_from_http_provider_anthropic_envelope_statuses():
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    err = failures.from_http(429, json.dumps(body).encode())
    assert isinstance(err, errors.RateLimited) and "slow down" in err.message
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert isinstance(failures.from_http(529, json.dumps(body).encode()), errors.Overloaded)



# ---- fixes found by review -----------------------------------------------------------------------

def test_an_inner_error_type_decides_the_status_of_a_generic_outer_error():
    inner = json.dumps({"error": {"type": "rate_limit_error", "message": "slow down"}})
    err = failures.from_inband({"type": "api_error", "message": inner})
    assert isinstance(err, errors.RateLimited) and "slow down" in err.message
