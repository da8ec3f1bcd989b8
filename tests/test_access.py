"""gateway/access.py without a server: who the client is behind a proxy, and one access line
per request, timed from the request to its first and last byte, written when the body closes."""
from __future__ import annotations

import time

from gateway import access, keys
from gateway.access import Recorder, TrustedProxies
from gateway.canonical import Usage


def test_forwarded_for_is_believed_only_from_a_trusted_proxy():
    proxies = TrustedProxies("127.0.0.1,10.0.0.0/8")
    env = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.1.2.3"}
    assert proxies.client(env) == "203.0.113.9"          # the last hop not a proxy of ours
    assert proxies.client({**env, "REMOTE_ADDR": "198.51.100.7"}) == "198.51.100.7"
    assert proxies.client({"REMOTE_ADDR": "127.0.0.1"}) == "127.0.0.1"
    assert proxies.client({**env, "HTTP_X_FORWARDED_FOR": "x\" injected"}) == "127.0.0.1"
    assert TrustedProxies("*").client({"REMOTE_ADDR": "198.51.100.7",
                                       "HTTP_X_FORWARDED_FOR": "192.0.2.1"}) == "192.0.2.1"


def _app(chunks, status="200 OK", fill=None, pause=0.0):
    def app(environ, start_response):
        rec = access.record(environ)
        rec["endpoint"] = "openai.chat_completions"
        if fill:
            rec.update(fill)
        start_response(status, [("Content-Type", "text/plain")])

        def body():
            for chunk in chunks:
                time.sleep(pause)
                yield chunk
        return body()
    return app


def _run(app, environ=None) -> list:
    lines = []
    recorder = Recorder(app, lines.append, TrustedProxies())
    env = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions",
           "REMOTE_ADDR": "127.0.0.1", keys.KEY_LABEL: "gateway", **(environ or {})}
    body = recorder(env, lambda status, headers, exc_info=None: None)
    for _ in body:
        pass
    assert lines == []              # nothing until the server closes the body
    body.close()
    body.close()                    # a second close writes nothing more
    return lines


def test_one_line_when_the_body_closes_with_first_byte_and_duration():
    class Stream:
        route_name = "cli"
    lines = _run(_app([b"a", b"b"], pause=0.05, fill={
        "model": "deepseek/deepseek-v4-flash", "upstream": Stream(),
        "usage": Usage(input_tokens=10, output_tokens=3, cache_read_tokens=4,
                       reasoning_tokens=2)}))
    assert len(lines) == 1
    line = lines[0]
    assert (line["method"], line["path"], line["status"], line["surface"]) == \
        ("POST", "/v1/chat/completions", 200, "chat")
    assert (line["model"], line["route"], line["key"], line["client"]) == \
        ("deepseek/deepseek-v4-flash", "cli", "gateway", "127.0.0.1")
    assert 40 <= line["ttfb_ms"] <= line["duration_ms"] and line["duration_ms"] >= 90
    assert (line["tokens_in"], line["tokens_out"], line["tokens_cached"],
            line["tokens_reasoning"]) == (10, 3, 4, 2)
    assert line["error"] is None


def test_an_empty_body_has_no_first_byte_and_an_error_is_named():
    line = _run(_app([], status="429 Too Many Requests", fill={"error": "rate_limit_exceeded"}))[0]
    assert line["status"] == 429 and line["ttfb_ms"] is None
    assert line["error"] == "rate_limit_exceeded" and line["tokens_in"] is None


def test_a_request_flask_never_routed_is_surface_other():
    def app(environ, start_response):
        start_response("404 NOT FOUND", [])
        return [b"{}"]
    lines = []
    body = Recorder(app, lines.append, TrustedProxies())(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/nope"}, lambda *a: None)
    list(body)
    body.close()
    assert lines[0]["surface"] == "other" and lines[0]["status"] == 404


def test_health_checks_that_went_well_are_quiet():
    assert access.quiet({"surface": "health", "status": 200})
    assert not access.quiet({"surface": "health", "status": 503})
    assert not access.quiet({"surface": "chat", "status": 200})
