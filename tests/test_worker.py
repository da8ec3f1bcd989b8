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


# -- stalled and slow clients (gateway/arrival.py) ------------------------------------------

from concurrent.futures import ThreadPoolExecutor      # noqa: E402
import json                                            # noqa: E402
import os                                              # noqa: E402
import resource                                        # noqa: E402
import socket                                          # noqa: E402
import time                                            # noqa: E402

from gateway import arrival                            # noqa: E402
from tests.conftest import start_gateway               # noqa: E402

FLASH = "deepseek/deepseek-v4-flash"
AUTH = {"Authorization": f"Bearer {LOCAL_KEY}"}
CHAT = json.dumps({"model": FLASH, "messages": [{"role": "user", "content": "hi"}]}).encode()
STALLS = [                      # what a stalled client sent before it stopped
    b"",                                                                # nothing at all
    b"POST /v1/chat/completions HTT",                                   # half a request line
    POST + b"Content-Type: application/js",                             # half the headers
    POST + b"Content-Length: %d\r\n\r\n" % len(CHAT) + CHAT[:10],       # half the body
]


@pytest.fixture(scope="module")
def exposed(fake_server, tmp_path_factory):
    """A gateway of its own: these tests hold hundreds of its connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    server = start_gateway(fake_server, tmp_path_factory, "exposed")
    yield server
    server.stop()


def read_all(sock: socket.socket, timeout: float = 15.0) -> bytes:
    sock.settimeout(timeout)
    raw = b""
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except ConnectionResetError:
        pass
    return raw


def test_500_stalled_connections_do_not_stop_health_or_model_calls(exposed, fake):
    socks = []
    for i in range(500):
        sock = socket.create_connection(("127.0.0.1", exposed.port), timeout=10)
        sock.sendall(STALLS[i % len(STALLS)])
        socks.append(sock)
    try:
        time.sleep(0.5)                 # every one of them is in the gateway's hands now
        for _ in range(5):
            started = time.monotonic()
            r = requests.get(exposed.url + "/health", timeout=5)
            assert r.json() == {"status": "ok"} and time.monotonic() - started < 1
        r = requests.post(exposed.url + "/v1/chat/completions", headers=AUTH, timeout=10,
                          json={"model": FLASH, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        with requests.post(exposed.url + "/v1/chat/completions", headers=AUTH, timeout=10,
                           stream=True, json={"model": FLASH, "stream": True, "messages": [
                               {"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200 and b"data: [DONE]" in b"".join(r.iter_content(None))
        # then each is dropped: those that began a request with a 408 in JSON first
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(read_all, socks))
    finally:
        for sock in socks:
            sock.close()
    for i, raw in enumerate(answers):
        if not STALLS[i % len(STALLS)]:
            assert raw == b""
            continue
        r = raw_http.parse(raw)
        assert r.status == 408 and r.headers["connection"] == "close", raw[:300]
        assert r.json()["error"]["code"] == "request_timeout"
    log = exposed.log()
    assert log.count("did not arrive in time") >= 375 and "Traceback" not in log
    assert requests.get(exposed.url + "/health", timeout=5).ok


def _send_then_stop(port: int, data: bytes) -> tuple[float, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        started = time.monotonic()
        raw = read_all(sock, 20)
    return time.monotonic() - started, raw


ANTHROPIC = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + LOCAL_KEY.encode() + b"\r\n"
BODY_STALLS = [   # (name, what was sent before the client stopped, status, envelope)
    ("a long body, past what the main loop gathers",
     POST + b"Content-Length: 1000000\r\n\r\n{" + b" " * (arrival.BODY_MAX + 50_000), "openai"),
    ("a chunked body", POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"mod", "openai"),
    ("a long Anthropic body",
     ANTHROPIC + b"Content-Length: 1000000\r\n\r\n{" + b" " * (arrival.BODY_MAX + 50_000),
     "anthropic"),
    ("a chunked Anthropic body", ANTHROPIC + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
     "anthropic"),
    ("a short body, gathered in the main loop", POST + b"Content-Length: 100\r\n\r\n{",
     "openai"),
]


def test_a_body_that_stops_gets_408_in_the_callers_envelope(exposed):
    with ThreadPoolExecutor(len(BODY_STALLS)) as pool:
        results = list(pool.map(lambda case: _send_then_stop(exposed.port, case[1]), BODY_STALLS))
    for (name, _, envelope), (waited, raw) in zip(BODY_STALLS, results):
        r = raw_http.parse(raw)
        assert r.status == 408, (name, raw[:300])
        assert arrival.BODY_GRACE - 0.5 < waited < arrival.BODY_GRACE + 3, name
        body = r.json()
        if envelope == "anthropic":
            assert body["type"] == "error" and body["error"]["type"] == "timeout_error", name
        else:
            assert body["error"]["code"] == "request_timeout", name
        assert raw.count(b"HTTP/1.1 ") == 1
    assert "Traceback" not in exposed.log()


def _trickle(sock: socket.socket, data: bytes, pieces: int, seconds: float) -> None:
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        sock.sendall(data[start:start + size])
        time.sleep(seconds / pieces)


def _slow_head(port: int) -> raw_http.RawResponse:
    """The request line and headers a byte at a time over about a second."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        _trickle(sock, GET + b"Connection: close\r\n\r\n", 50, 1.0)
        return raw_http.parse(read_all(sock))


def _slow_body(port: int) -> raw_http.RawResponse:
    """A 400 KB body at about 80 KB/s, five times the minimum rate: a slow link."""
    body = json.dumps({"model": FLASH, "messages": [
        {"role": "user", "content": "hi " + "x" * 400_000}]}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(POST + b"Content-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        _trickle(sock, body, 50, 5.0)
        return raw_http.parse(read_all(sock))


def _kept_alive(port: int) -> tuple[raw_http.RawResponse, raw_http.RawResponse]:
    """Two requests on one connection, the second after a pause and in two pieces."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(GET + b"\r\n")
        first = b""
        while b"\r\n\r\n" not in first or len(raw_http.parse(first).body) < int(
                raw_http.parse(first).headers["content-length"]):
            first += sock.recv(65536)
        time.sleep(2)
        sock.sendall(GET[:20])
        time.sleep(1)
        sock.sendall(GET[20:] + b"Connection: close\r\n\r\n")
        return raw_http.parse(first), raw_http.parse(read_all(sock))


def test_slow_but_steady_clients_are_served(exposed):
    with ThreadPoolExecutor(3) as pool:
        head, body, kept = pool.submit(_slow_head, exposed.port), \
            pool.submit(_slow_body, exposed.port), pool.submit(_kept_alive, exposed.port)
        assert head.result().json() == {"status": "ok"}
        r = body.result()
        assert r.status == 200, r.raw[:300]
        assert r.json()["choices"][0]["message"]["content"]
        first, second = kept.result()
        assert first.json() == second.json() == {"status": "ok"}


def test_each_worker_raises_its_open_files_limit(fake_server, tmp_path):
    """Started with the soft limit many hosts give services (1,024), the workers raise theirs
    to the hard limit (at most 65,536): every connection and upstream call holds a file."""
    import subprocess
    import sys
    import yaml
    from tests.conftest import ROOT, free_port, gateway_config
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY and hard < 65536 else 65536
    assert wanted > 1024, "this machine's hard limit leaves nothing to raise"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_server.url, tmp_path)))
    port = free_port()
    env = {**os.environ, "GATEWAY_CONFIG": str(path), "HOST": "127.0.0.1", "PORT": str(port),
           "WEB_CONCURRENCY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit()
                   and _parent(int(p)) == proc.pid]
        assert workers, "no worker found"
        for pid in workers:
            assert _soft_nofile(pid) == wanted
        assert _soft_nofile(proc.pid) == 1024         # the master keeps what it was given
    finally:
        proc.terminate()
        proc.wait(15)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    return int(line.split()[3])
