"""``gateway/errors.py`` (the hierarchy, as data) and every envelope built from it.

The hierarchy knows no wire format and no web framework; each client codec owns its envelope
(``error_body``); the blueprints answer in their codec's envelope, and a request that matches no
route in the envelope of the surface its URL belongs to (``gateway/views/error_handlers.py``).
"""
from __future__ import annotations

import ast
import json
import pathlib

import pytest

from gateway import errors
from gateway.codecs import anthropic_messages, openai_chat, openai_completions, openai_responses
from gateway.views import error_handlers
from tests.conftest import LOCAL_KEY, gateway_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---- the hierarchy -----------------------------------------------------------------------------

def test_the_module_imports_nothing_but_annotations_support():
    tree = ast.parse((ROOT / "gateway" / "errors.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [
        ("__future__", ["annotations"])]


@pytest.mark.parametrize("cls,status,openai_type,anthropic_type,code", [
    (errors.GatewayError, 500, "server_error", "api_error", None),
    (errors.InvalidRequest, 400, "invalid_request_error", "invalid_request_error", None),
    (errors.AuthenticationFailed, 401, "authentication_error", "authentication_error",
     "invalid_api_key"),
    (errors.InsufficientCredits, 402, "insufficient_quota", "billing_error", "insufficient_quota"),
    (errors.PermissionDenied, 403, "permission_error", "permission_error", None),
    (errors.NotFound, 404, "not_found_error", "not_found_error", None),
    (errors.MethodNotAllowed, 405, "invalid_request_error", "invalid_request_error", None),
    (errors.RequestTimeout, 408, "invalid_request_error", "timeout_error", "request_timeout"),
    (errors.RequestTooLarge, 413, "invalid_request_error", "request_too_large",
     "request_too_large"),
    (errors.RateLimited, 429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
    (errors.NotConfigured, 503, "server_error", "api_error", None),
    (errors.AtCapacity, 503, "server_error", "overloaded_error", "gateway_at_capacity"),
    (errors.ShuttingDown, 503, "server_error", "overloaded_error", "gateway_restarting"),
    (errors.UpstreamError, 502, "server_error", "api_error", "upstream_error"),
    (errors.UpstreamTimeout, 504, "server_error", "timeout_error", "upstream_timeout"),
    (errors.Overloaded, 529, "server_error", "overloaded_error", "overloaded"),
])
def test_each_class_carries_its_status_type_names_and_default_code(cls, status, openai_type,
                                                                    anthropic_type, code):
    err = cls("why")
    assert (err.status, err.openai_type, err.anthropic_type, err.code) == (
        status, openai_type, anthropic_type, code)
    assert isinstance(err, errors.GatewayError) and str(err) == err.message == "why"
    assert err.param is None and err.retry_after is None and err.details is None


def test_the_constructor_overrides_code_status_and_carries_the_extras():
    err = errors.RateLimited("wait", code="usage_limit_reached", param="p", retry_after=30,
                             details={"error_code": "x"}, status=420)
    assert (err.code, err.param, err.retry_after, err.details, err.status) == (
        "usage_limit_reached", "p", 30, {"error_code": "x"}, 420)
    assert errors.RateLimited("wait").status == 429        # the class is untouched


def test_upstream_timeout_and_overload_are_upstream_errors():
    assert issubclass(errors.UpstreamTimeout, errors.UpstreamError)
    assert issubclass(errors.Overloaded, errors.UpstreamError)


@pytest.mark.parametrize("status,cls,kept", [
    (400, errors.InvalidRequest, 400), (401, errors.AuthenticationFailed, 401),
    (402, errors.InsufficientCredits, 402), (403, errors.PermissionDenied, 403),
    (404, errors.NotFound, 404), (405, errors.MethodNotAllowed, 405),
    (413, errors.RequestTooLarge, 413), (429, errors.RateLimited, 429),
    (503, errors.NotConfigured, 503), (504, errors.UpstreamTimeout, 504),
    (529, errors.Overloaded, 529),
    (418, errors.InvalidRequest, 418),      # an unknown 4xx stays the client's 4xx
    (500, errors.UpstreamError, 502), (501, errors.UpstreamError, 502),
])
def test_error_for_status(status, cls, kept):
    err = errors.error_for_status(status, "m", code="c")
    assert type(err) is cls and err.status == kept and err.code == "c" and err.message == "m"


# ---- the envelopes -----------------------------------------------------------------------------

def test_openai_envelope_is_shared_by_the_openai_surfaces():
    err = errors.InvalidRequest("bad field", param="messages[0]")
    body = {"error": {"message": "bad field", "type": "invalid_request_error", "code": None,
                      "param": "messages[0]"}}
    assert openai_chat.error_body(err) == body
    assert openai_completions.error_body(err) == body


def test_anthropic_envelope_with_and_without_details():
    assert anthropic_messages.error_body(errors.Overloaded("busy")) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    err = errors.NotFound("no thread", code="thread_not_found",
                          details={"error_code": "thread_not_found"})
    assert anthropic_messages.error_body(err) == {"type": "error", "error": {
        "type": "not_found_error", "message": "no thread",
        "details": {"error_code": "thread_not_found"}}}


def test_responses_envelope_is_openais_for_ordinary_errors():
    err = errors.NotFound("gone", code="response_not_found")
    assert openai_responses.error_body(err) == openai_chat.error_body(err)


def test_responses_envelope_says_usage_limit_reached_with_resets_at(monkeypatch):
    monkeypatch.setattr(openai_responses.time, "time", lambda: 1_800_000_000.5)
    err = errors.RateLimited("window used up", code="usage_limit_reached", retry_after=600)
    assert openai_responses.error_body(err) == {"error": {
        "message": "window used up", "type": "usage_limit_reached", "code": "usage_limit_reached",
        "param": None, "resets_at": 1_800_000_600}}
    no_reset = errors.RateLimited("window used up", code="usage_limit_reached")
    assert "resets_at" not in openai_responses.error_body(no_reset)["error"]
    assert openai_chat.error_body(err)["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("err", [errors.Overloaded("busy"), errors.AtCapacity("full")])
def test_responses_envelope_says_server_is_overloaded_for_overloads(err):
    body = openai_responses.error_body(err)["error"]
    assert body["code"] == "server_is_overloaded" and body["type"] == "server_error"
    assert openai_chat.error_body(err)["error"]["code"] == err.code


def test_respond_sends_the_status_the_envelope_and_retry_after():
    resp = error_handlers.respond(errors.AtCapacity("full", retry_after=2),
                                  anthropic_messages.error_body)
    assert resp.status_code == 503 and resp.mimetype == "application/json"
    assert resp.headers["Retry-After"] == "2"
    assert json.loads(resp.get_data()) == {"type": "error", "error": {
        "type": "overloaded_error", "message": "full"}}
    assert "Retry-After" not in error_handlers.respond(errors.NotFound("x"),
                                                       openai_chat.error_body).headers


# ---- which envelope a request gets -------------------------------------------------------------

@pytest.fixture
def anon(fake, tmp_path):
    """A test client without a key."""
    from gateway import create_app
    return create_app(gateway_config(fake.url, tmp_path)).test_client()


def anthropic_shaped(body: dict) -> bool:
    return body.get("type") == "error" and set(body["error"]) >= {"type", "message"}


def openai_shaped(body: dict) -> bool:
    return set(body) == {"error"} and set(body["error"]) >= {"message", "type", "code", "param"}


@pytest.mark.parametrize("method,path,status,anthropic", [
    ("GET", "/v1/messages", 405, True),
    ("POST", "/v1/messages/nope", 404, True),
    ("GET", "/v1/messages/count_tokens", 405, True),
    ("POST", "/v1/responses/r/input_items", 405, False),
    ("GET", "/v1/responses/r/x/y", 404, False),
    ("GET", "/responses/r/x/y", 404, False),
    ("GET", "/v1/nothing", 404, False),
    ("PUT", "/v1/chat/completions", 405, False),
])
def test_unrouted_requests_get_the_envelope_of_their_url(anon, method, path, status, anthropic):
    for headers in ({"Authorization": f"Bearer {LOCAL_KEY}"}, {}):
        r = anon.open(path, method=method, headers=headers)
        want = status if headers else 401          # no key: the key check answers first
        assert r.status_code == want, (path, r.json)
        assert anthropic_shaped(r.json) if anthropic else openai_shaped(r.json), r.json
        if headers and anthropic:
            assert r.json["error"]["type"] == ("not_found_error" if status == 404
                                               else "invalid_request_error")
        elif headers:
            assert r.json["error"]["code"] == ("unknown_url" if status == 404
                                               else "method_not_allowed")


@pytest.mark.parametrize("path,anthropic", [
    ("/v1/messages", True), ("/v1/messages/count_tokens", True), ("/v1/chat/completions", False),
    ("/v1/completions", False), ("/v1/responses", False), ("/responses", False),
])
def test_routed_requests_get_their_blueprints_envelope(anon, path, anthropic):
    r = anon.post(path, json={})
    assert r.status_code == 401
    assert anthropic_shaped(r.json) if anthropic else openai_shaped(r.json), r.json
    r = anon.post(path, data=b"{", content_type="application/json",
                  headers={"Authorization": f"Bearer {LOCAL_KEY}"})
    assert r.status_code == 400
    assert anthropic_shaped(r.json) if anthropic else openai_shaped(r.json), r.json


def test_service_endpoints_and_models_use_the_openai_envelope(anon):
    for path in ("/usage", "/v1/models", "/v1/models/nope"):
        r = anon.get(path)
        assert r.status_code == 401 and openai_shaped(r.json), (path, r.json)
    r = anon.get("/v1/models/nope", headers={"Authorization": f"Bearer {LOCAL_KEY}"})
    assert r.status_code == 404 and openai_shaped(r.json) and r.json["error"]["code"] == "model_not_found"


def test_an_unexpected_exception_is_a_500_in_the_blueprints_envelope(anon, monkeypatch, caplog):
    from gateway.views import anthropic

    def broken(*a, **k):
        raise RuntimeError("bug")
    monkeypatch.setattr(anthropic.anthropic_messages, "decode_for_count", broken)
    r = anon.post("/v1/messages/count_tokens", json={"model": "m", "messages": []},
                  headers={"Authorization": f"Bearer {LOCAL_KEY}"})
    assert r.status_code == 500 and r.json == {"type": "error", "error": {
        "type": "api_error", "message": "internal gateway error"}}
    assert any("unhandled error on POST /v1/messages/count_tokens" in rec.getMessage()
               for rec in caplog.records)
