"""Transport and the CLI route's HTTP exchange, with ``responses`` standing in for Command Code."""
from __future__ import annotations

import json
import time

import pytest
import requests
import responses

from gateway import config, errors
from gateway.canonical import ChatRequest, Finish, Message, Text, TextDelta
from gateway.catalog import Catalog
from gateway.transport import Transport
from gateway.upstream.cli import CliRoute

BASE = "https://cc.test"
URL = BASE + "/alpha/generate"
MODEL = Catalog.load().resolve("deepseek/deepseek-v4-flash")


def route(**cc) -> CliRoute:
    cfg = config.validate({"commandcode": {"api_key": "user_k", "base_url": BASE, **cc}})
    return CliRoute(Transport(5, 30), BASE, cfg["commandcode"]["cli_version"])


def run(r: CliRoute) -> list:
    stream = r.open(ChatRequest(MODEL, MODEL.id, [Message("user", [Text("hi")])]), "user_k")
    return [ev for batch in stream for ev in batch]


@responses.activate
def test_sends_exactly_the_cli_headers_and_streams_events():
    responses.post(URL, body=b'{"type":"text-delta","text":"hey"}\n{"type":"finish","finishReason":"stop"}\n',
                   content_type="application/x-ndjson")
    events = run(route(cli_version="1.70.1"))
    assert events[0] == TextDelta("hey") and isinstance(events[1], Finish)
    sent = responses.calls[0].request
    body = json.loads(sent.body)
    assert sent.headers["Authorization"] == "Bearer user_k"
    assert sent.headers["User-Agent"] == "cli"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["x-command-code-version"] == "1.70.1"
    assert sent.headers["x-cli-environment"] == "production"
    assert sent.headers["x-session-id"] == body["threadId"]
    ours = {k.lower() for k in sent.headers} - {"accept", "accept-encoding", "connection", "content-length"}
    assert ours == {"authorization", "user-agent", "content-type", "x-command-code-version",
                    "x-cli-environment", "x-session-id", "x-project-slug", "x-taste-learning"}


def cc_error(status, **err):
    return {"success": False, "error": {"status": status, **err}}


@pytest.mark.parametrize("status,body,cls,out_status,code", [
    (401, cc_error(401, code="UNAUTHORIZED", message="Invalid 'Authorization' header"),
     errors.AuthenticationFailed, 401, "upstream_authentication_failed"),
    (400, cc_error(400, message="Insufficient credits"), errors.InsufficientCredits, 402, "insufficient_quota"),
    (402, cc_error(402, message="Insufficient Balance"), errors.InsufficientCredits, 402, "insufficient_quota"),
    (403, {"error": {"code": "MODEL_NOT_IN_PLAN", "message": "MODEL_NOT_IN_PLAN: claude-opus-5 is not included in your plan"}},
     errors.PermissionDenied, 403, "model_not_in_plan"),
    (403, {"error": {"code": "upgrade_required", "message": "Please upgrade"}},
     errors.PermissionDenied, 403, "upgrade_required"),
    (403, cc_error(403, message="PREMIUM_CREDITS_EXHAUSTED: premium allowance used"),
     errors.PermissionDenied, 403, "premium_credits_exhausted"),
    (400, cc_error(400, message="Too big: expected number to be <=200000"), errors.InvalidRequest, 400, None),
    (429, {"error": {"code": "RATE_LIMITED", "message": "Rate-limited by the upstream"}},
     errors.RateLimited, 429, "rate_limit_exceeded"),
    (500, cc_error(500, message="internal"), errors.UpstreamError, 502, "upstream_error"),
    (529, cc_error(529, message="overloaded"), errors.Overloaded, 529, "overloaded"),
    (422, cc_error(422, code="cmd_zdr_no_providers", message="no ZDR"), errors.InvalidRequest, 422,
     "cmd_zdr_no_providers"),
])
@responses.activate
def test_http_errors_map_to_gateway_errors(status, body, cls, out_status, code):
    responses.post(URL, json=body, status=status)
    with pytest.raises(cls) as info:
        run(route())
    assert info.value.status == out_status
    assert info.value.code == code
    assert "user_k" not in info.value.message


@responses.activate
def test_plan_window_429_carries_retry_after_from_reset():
    reset = int(time.time()) + 120
    responses.post(URL, status=429, json={"error": {
        "code": "RATE_LIMITED", "type": "rate_limit_error",
        "message": "You've reached your 5-hour usage limit.",
        "rateLimit": {"window": "fiveHour", "reset": reset}}})
    with pytest.raises(errors.RateLimited) as info:
        run(route())
    assert 110 <= info.value.retry_after <= 120
    assert info.value.code == "usage_limit_reached"
    assert "5-hour usage limit" in info.value.message


def test_a_plan_window_said_in_words_is_still_a_window():
    """The Provider API's envelope has no ``rateLimit``: its message says the window and when
    it resets, which is what Codex needs (``usage_limit_reached`` and ``resets_at``)."""
    from gateway.upstream import failures
    err = failures.classify(429, "You've reached your weekly usage limit. Resets in 3h.",
                            code="rate_limited")
    assert (type(err), err.code, err.retry_after) == (errors.RateLimited, "usage_limit_reached", 3 * 3600)
    plain = failures.classify(429, "Rate-limited by the upstream")
    assert (plain.code, plain.retry_after) == ("rate_limit_exceeded", None)


@responses.activate
def test_html_error_pages_are_summarised_not_relayed():
    responses.post(URL, status=502, body="<html><body>Bad gateway</body></html>",
                   content_type="text/html")
    with pytest.raises(errors.UpstreamError) as info:
        run(route())
    assert info.value.status == 502 and "<html>" not in info.value.message


@responses.activate
def test_unreachable_upstream_is_a_502_naming_the_host_not_the_key():
    responses.post(URL, body=requests.ConnectionError("refused"))
    with pytest.raises(errors.UpstreamError) as info:
        run(route())
    assert info.value.status == 502 and BASE in info.value.message


def test_a_refused_connection_is_a_502_not_a_timeout():
    """A real refusal (nothing listens on the port): urllib3 2 makes its NewConnectionError a
    subclass of ConnectTimeoutError, which must not turn it into a 504."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]         # free once closed: nothing listens there
    r = CliRoute(Transport(2, 5), f"http://127.0.0.1:{port}", config.DEFAULT_CLI_VERSION)
    started = time.monotonic()
    with pytest.raises(errors.UpstreamError) as info:
        run(r)
    assert info.value.status == 502 and not isinstance(info.value, errors.UpstreamTimeout)
    assert f"cannot reach Command Code at http://127.0.0.1:{port}" in info.value.message
    assert time.monotonic() - started < 2


@responses.activate
def test_upstream_timeout_is_a_504():
    responses.post(URL, body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(errors.UpstreamTimeout) as info:
        run(route())
    assert info.value.status == 504


def test_no_command_code_key_is_a_503_that_says_how_to_set_it():
    cfg = config.validate({"commandcode": {"base_url": BASE}})
    with pytest.raises(errors.NotConfigured, match="COMMAND_CODE_API_KEY"):
        CliRoute(Transport(5, 30), BASE, cfg["commandcode"]["cli_version"]).open(
            ChatRequest(MODEL, MODEL.id, [Message("user", [Text("hi")])]),
            cfg["commandcode"]["api_key"])


@responses.activate
def test_one_session_is_reused_across_requests():
    t = Transport(5, 30)
    assert t.session is t.session


class HungUpstream:
    """A loopback server that accepts connections, reads the request, and never answers."""

    def __init__(self):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            self.conns.append(conn)       # kept open, silent

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def hung():
    server = HungUpstream()
    yield server
    server.close()


@pytest.mark.parametrize("mode,model", [("cli", "deepseek/deepseek-v4-flash"),
                                        ("provider", "deepseek/deepseek-v4-flash"),
                                        ("provider", "claude-sonnet-5")])
def test_an_upstream_that_never_answers_is_a_504_after_idle_timeout(hung, tmp_path, mode, model):
    """It accepts the connection and stays silent: 504 upstream_timeout, not 502 'cannot
    reach' (urllib3's read timeout arrives wrapped as a connection error)."""
    from gateway import create_app
    from tests.conftest import LOCAL_KEY, gateway_config
    app = create_app(gateway_config(hung.url, tmp_path, commandcode={
        "mode": mode, "idle_timeout": 0.5, "api_key": "user_pro_key_0123456789"}))
    c = app.test_client()
    started = time.monotonic()
    r = c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {LOCAL_KEY}"},
               json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 504 and r.json["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5


def test_account_lookups_against_a_silent_upstream_time_out_as_504(hung):
    from gateway.upstream.exchange import get_json
    t = Transport(connect_timeout=1, idle_timeout=5)
    with pytest.raises(errors.UpstreamTimeout):
        get_json(t, hung.url + "/alpha/billing/credits", {}, timeout=0.3)
