"""gateway/worker.py over raw sockets against the real gunicorn (the ``gateway`` fixture): what
gunicorn's own parser refuses comes back as JSON in the OpenAI envelope with gunicorn's status,
never as an HTML page; gunicorn never writes a second answer on a connection; no traceback."""
from __future__ import annotations

import re

import pytest
import requests

from tests import raw_http
from tests.conftest import LOCAL_KEY

GET = b"GET /health HTTP/1.1\r\nHost: x\r\n"
POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + \
    LOCAL_KEY.encode() + b"\r\n"

MALFORMED = [    # (name, request, status, code, words of the message)
    ("content-length not a number", POST + b"Content-Length: abc\r\n\r\n", 400,
     "invalid_http_request", "CONTENT-LENGTH"),
    ("negative content-length", POST + b"Content-Length: -1\r\n\r\n", 400,
     "invalid_http_request", "CONTENT-LENGTH"),
    ("two content-lengths", POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nab", 400,
     "invalid_http_request", "CONTENT-LENGTH"),
    ("content-length and chunked", POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", 400, "invalid_http_request", "CONTENT-LENGTH"),
    ("gzip without chunked", POST + b"Transfer-Encoding: gzip\r\n\r\n", 400,
     "invalid_http_request", "TRANSFER-ENCODING"),
    ("an unknown transfer coding", POST + b"Transfer-Encoding: zstd, chunked\r\n\r\n", 501,
     "unsupported_transfer_coding", "zstd"),
    ("150 headers", GET + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431,
     "request_headers_too_large", "limit request headers"),
    ("an over-long header line", GET + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n", 431,
     "request_headers_too_large", "limit request headers"),
    ("an over-long request line", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
     "request_line_too_long", "too large"),
    ("a request line that is not one", b"GARBAGE\r\n\r\n", 400, "invalid_http_request",
     "request line"),
    ("a bare LF request line", b"GET /health HTTP/1.1\nHost: x\n\n", 400,
     "invalid_http_request", "bare LF"),
    ("a bad method", b"G(T /health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_http_request",
     "method"),
    ("a bad HTTP version", b"GET /health HTTP/7.1\r\nHost: x\r\n\r\n", 400,
     "invalid_http_request", "version"),
    ("a bad header name", GET + b"Bad Name: x\r\n\r\n", 400, "invalid_http_request", "header"),
    ("a header without a colon", GET + b"NoColonHere\r\n\r\n", 400, "invalid_http_request",
     "header"),
    ("obsolete line folding", GET + b"X-A: a\r\n  folded\r\n\r\n", 400, "invalid_http_request",
     "folding"),
    ("a control character in a value", GET + b"X-A: a\x00b\r\n\r\n", 400,
     "invalid_http_request", "header"),
    ("an unmet expectation", POST + b"Content-Length: 2\r\nExpect: 100-sideways\r\n\r\nab", 417,
     "expectation_failed", "expectation"),
]


def check_json_error(r: raw_http.RawResponse, status: int, code: str | None = None) -> str:
    assert r.status == status, r.raw[:400]
    assert b"<html" not in r.raw.lower()
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] is None
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]["message"]


@pytest.mark.parametrize("name,data,status,code,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_what_the_parser_refuses_is_json_in_the_openai_envelope(gateway, name, data, status,
                                                                code, words):
    r = raw_http.exchange(gateway.port, data)
    message = check_json_error(r, status, code)
    assert message.startswith("the HTTP request could not be parsed: ")
    assert words.lower() in message.lower()
    assert r.headers["connection"] == "close"
    assert r.raw.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("data", [
    GET + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",                                  # no key: a 401, body unread
    b"POST /v1/nothing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
], ids=["health", "unauthorized", "unknown path"])
def test_a_malformed_body_the_app_did_not_read_gets_no_second_answer(gateway, data):
    r = raw_http.exchange(gateway.port, data)
    assert r.status in (200, 401, 404) and r.headers["content-type"] == "application/json"
    assert r.raw.count(b"HTTP/1.1 ") == 1 and b"<html" not in r.raw.lower()


def test_an_unread_body_cut_short_closes_quietly(gateway):
    data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nab")
    r = raw_http.exchange(gateway.port, data, half_close=True)
    assert r.status == 401 and r.raw.count(b"HTTP/1.1 ") == 1


def test_a_malformed_request_after_a_good_one_on_the_connection(gateway):
    r = raw_http.exchange(gateway.port, GET + b"\r\n" + b"GARBAGE\r\n\r\n")
    assert r.status == 200 and r.json() == {"status": "ok"}
    second = raw_http.parse(r.raw[r.raw.index(b"HTTP/1.1 ", 10):])
    check_json_error(second, 400, "invalid_http_request")


def test_the_gateway_keeps_serving_and_logs_no_traceback(gateway):
    for _, data, *_ in MALFORMED:
        raw_http.exchange(gateway.port, data)
    assert requests.get(gateway.url + "/health", timeout=5).json() == {"status": "ok"}
    log = gateway.log()
    assert "Traceback" not in log
    assert "Using worker: gateway.worker." in log        # JsonErrorWorker or a subclass
    assert re.search(r"WARNING\] Invalid request from ip=127\.0\.0\.1: ", log)
