"""A real nginx running deploy/nginx/command-code-gateway.conf (tests/nginx_server.py) over HTTPS
and HTTP/2, in front of a real gunicorn (2 workers) and the fake upstream.

* streamed answers through nginx reach the ``openai`` and ``anthropic`` SDKs event by event, each
  within a few milliseconds of the same request made straight to gunicorn;
* a stream silent for longer than nginx's default timeouts (60 s) lives on the gateway's
  keep-alives: it starts when the module starts and is checked by the last test, so the module
  costs little more than that silence;
* nginx's own errors (413 body too large, 502 gateway down) are JSON in the OpenAI envelope, and
  the gateway's own errors pass through untouched;
* X-Forwarded-For / X-Forwarded-Proto reach gunicorn, and gunicorn trusts the scheme only from
  an address in ``forwarded_allow_ips``.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import threading
import time
import uuid

import anthropic
import httpx
import openai
import pytest
import yaml

from tests.conftest import LOCAL_KEY, Gunicorn, free_port, gateway_config
from tests.nginx_server import Nginx, nginx_binary


@pytest.fixture(autouse=True, scope="module")
def _nginx_is_installed():
    """Never a skip: without nginx this module fails and says how to get it (.ci/run does)."""
    assert nginx_binary() is not None, "nginx is not installed (Debian: apt-get install -y nginx)"

FLASH = "deepseek/deepseek-v4-flash"
HTTP2 = importlib.util.find_spec("h2") is not None      # httpx's HTTP/2 needs the h2 package
SILENCE = 65                # longer than nginx's default proxy_read_timeout (60 s)
TOLERANCE = 0.05            # seconds an event may lag behind the same event sent direct


def start_gunicorn(fake_server, tmp_path_factory, name: str, workers: int = 2,
                   env: dict | None = None) -> Gunicorn:
    folder = tmp_path_factory.mktemp(name)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_server.url, folder)))
    return Gunicorn(str(path), free_port(), workers=workers, extra_env=env).wait_ready()


# gw, proxy and the silent stream live for the whole session: the stream starts with this
# module's first test and is checked by its last, which tests/conftest.py moves to the end of
# the run, so its 65 s pass while the rest of the suite runs instead of idling here
@pytest.fixture(scope="session")
def gw(fake_server, tmp_path_factory):
    server = start_gunicorn(fake_server, tmp_path_factory, "nginx-gw")
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="session")
def proxy(gw, tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx"), gw.port).wait_ready()
    yield server
    server.stop()
    assert "[emerg]" not in server.log() and "[crit]" not in server.log(), server.log()


@pytest.fixture(scope="module")
def http(proxy):
    """An HTTP/2 client that trusts the proxy's self-signed certificate."""
    with httpx.Client(verify=proxy.ssl_context(), http2=HTTP2, timeout=30) as client:
        yield client


def sdk_http_client(sdk, proxy):
    """An HTTP/2 client of the HTTP library ``sdk`` is built on (``httpx``, or ``httpx2`` in the
    newest openai / anthropic releases) trusting the proxy's certificate."""
    base = importlib.import_module(sdk.__name__ + "._base_client")
    library = getattr(base, "httpx2", None) or base.httpx
    return library.Client(verify=proxy.ssl_context(), http2=HTTP2, timeout=30)


class SilentStream(threading.Thread):
    """A chat stream with ``SILENCE`` seconds of upstream silence, through nginx, with a read
    timeout of a few seconds: it only survives if the keep-alives come through as they are sent."""

    def __init__(self, proxy):
        super().__init__(daemon=True)
        self.proxy, self.text, self.keepalives, self.error, self.status = proxy, "", 0, None, None
        self.elapsed = None

    def run(self):
        start = time.monotonic()
        try:
            with httpx.Client(verify=self.proxy.ssl_context(), http2=HTTP2,
                              timeout=httpx.Timeout(10, read=5)) as client:
                with client.stream("POST", self.proxy.url + "/v1/chat/completions",
                                   headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                                   json={"model": FLASH, "stream": True, "messages": [
                                       {"role": "user", "content": f"[[silence:{SILENCE}]]"}]}) as r:
                    self.status = r.status_code
                    for line in r.iter_lines():
                        if line.startswith(":"):
                            self.keepalives += 1
                        elif line.startswith("data: {"):
                            for choice in json.loads(line[6:]).get("choices", []):
                                self.text += choice["delta"].get("content") or ""
        except Exception as exc:        # reported by the last test
            self.error = exc
        self.elapsed = time.monotonic() - start


@pytest.fixture(scope="session", autouse=True)
def silent_stream(proxy):
    """Started before the module's first test, checked by its last one (run last of all)."""
    stream = SilentStream(proxy)
    stream.start()
    yield stream
    stream.join(timeout=SILENCE + 30)


def access_lines(server, marker: str) -> list[str]:
    """The gateway's access lines (gateway/access.py) for the request to ``/<marker>``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line[line.index("gateway.access: ") + 16:] for line in server.log().splitlines()
                 if f'"GET /{marker}"' in line and "gateway.access: " in line]
        if lines:
            return lines
        time.sleep(0.05)
    return []


# ---- streams -------------------------------------------------------------------------------

def timed_openai(client: openai.OpenAI, n: int) -> tuple[list[float], list[str]]:
    start, times, texts = time.monotonic(), [], []
    for chunk in client.chat.completions.create(model=FLASH, stream=True, messages=[
            {"role": "user", "content": f"[[slow:{n}]]"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic() - start)
            texts.append(chunk.choices[0].delta.content)
    return times, texts


def timed_anthropic(client: anthropic.Anthropic, n: int) -> tuple[list[float], list[str]]:
    start, times, texts = time.monotonic(), [], []
    for event in client.messages.create(model=FLASH, max_tokens=256, stream=True, messages=[
            {"role": "user", "content": f"[[slow:{n}]]"}]):
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            times.append(time.monotonic() - start)
            texts.append(event.delta.text)
    return times, texts


def compare(direct, proxied, n):
    (d_times, d_texts), (p_times, p_texts) = direct, proxied
    assert p_texts == d_texts == [f"tok{i} " for i in range(n)]
    # one by one, as upstream spaces them (100 ms), not in one lump at the end
    assert p_times[-1] - p_times[0] > 0.07 * (n - 1), p_times
    # the first event no later than direct (it is often earlier: nginx sends the request in one
    # write on a kept-alive connection, where httpx's two writes straight to gunicorn can wait
    # for a delayed ACK), then every later one as long after it as direct
    first = p_times[0] - d_times[0]
    lags = [(p - p_times[0]) - (d - d_times[0]) for p, d in zip(p_times, d_times)]
    assert first < TOLERANCE, (d_times, p_times)
    assert max(abs(x) for x in lags) < TOLERANCE, (lags, d_times, p_times)
    return first, lags


def test_openai_sdk_stream_through_nginx_arrives_as_direct(gw, proxy, fake):
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key=LOCAL_KEY, max_retries=0,
                        http_client=sdk_http_client(openai, proxy))
    direct = openai.OpenAI(base_url=gw.url + "/v1", api_key=LOCAL_KEY, max_retries=0, timeout=30)
    via.models.list()           # TLS and HTTP/2 set up before the timing starts
    direct.models.list()
    first, lags = compare(timed_openai(direct, 10), timed_openai(via, 10), 10)
    print(f"\nopenai through nginx: first event {first * 1000:+.1f} ms vs direct, then lags (ms) "
          f"{[round(x * 1000, 1) for x in lags]}")


def test_anthropic_sdk_stream_through_nginx_arrives_as_direct(gw, proxy, fake):
    via = anthropic.Anthropic(base_url=proxy.url, api_key=LOCAL_KEY, max_retries=0,
                              http_client=sdk_http_client(anthropic, proxy))
    direct = anthropic.Anthropic(base_url=gw.url, api_key=LOCAL_KEY, max_retries=0, timeout=30)
    via.models.list()
    direct.models.list()
    first, lags = compare(timed_anthropic(direct, 10), timed_anthropic(via, 10), 10)
    print(f"\nanthropic through nginx: first event {first * 1000:+.1f} ms vs direct, then lags "
          f"(ms) {[round(x * 1000, 1) for x in lags]}")


def test_clients_get_http2_and_plain_http_is_redirected(proxy, http):
    r = http.get(proxy.url + "/health")
    assert r.status_code == 200 and r.http_version == ("HTTP/2" if HTTP2 else "HTTP/1.1")
    r = httpx.get(proxy.http_url + "/v1/models?x=1", follow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["location"].startswith("https://") and r.headers["location"].endswith(
        "/v1/models?x=1")


# ---- errors --------------------------------------------------------------------------------

def assert_openai_envelope(r, status: int, code: str):
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json"), r.text
    err = r.json()["error"]
    assert err["code"] == code and err["param"] is None and err["message"] and err["type"]
    return err


def test_body_over_client_max_body_size_is_nginx_json_413(gw, proxy, tmp_path):
    marker = uuid.uuid4().hex
    body = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (51 << 20) + b'"}]}'
    headers = {"Authorization": f"Bearer {LOCAL_KEY}", "Content-Type": "application/json"}
    # HTTP/1.1, as most SDKs send (httpx's HTTP/2 writes the whole body before it reads, and
    # nginx stops reading at the limit, so HTTP/2 is checked with curl below)
    with httpx.Client(verify=proxy.ssl_context(), timeout=30) as h1:
        r = h1.post(proxy.url + f"/v1/chat/completions?{marker}", content=body, headers=headers)
    err = assert_openai_envelope(r, 413, "request_too_large")
    assert err["type"] == "invalid_request_error" and "<html" not in r.text
    curl = shutil.which("curl")
    if curl:
        (tmp_path / "big.json").write_bytes(body)
        out = subprocess.run([curl, "--http2", "-sS", "--cacert", proxy.cert, "-o", "-",
                              "-w", "\n%{http_code} %{http_version} %{content_type}",
                              "-H", "Content-Type: application/json",
                              "-H", f"Authorization: Bearer {LOCAL_KEY}",
                              "--data-binary", f"@{tmp_path / 'big.json'}",
                              proxy.url + f"/v1/chat/completions?{marker}"],
                             capture_output=True, text=True, timeout=60)
        text, _, meta = out.stdout.rpartition("\n")
        assert meta.split()[:2] == ["413", "2"], (out.stdout[-500:], out.stderr)
        assert meta.split()[2].startswith("application/json")
        assert json.loads(text)["error"]["code"] == "request_too_large"
    assert marker not in gw.log()           # answered by nginx, gunicorn never saw it


def test_gateway_errors_come_through_unchanged(gw, proxy, http, fake):
    cases = [("POST", "/v1/chat/completions", {}, {"model": FLASH, "messages": [
                 {"role": "user", "content": "hi"}]}),                       # 401: no key
             ("POST", "/v1/chat/completions", {"Authorization": f"Bearer {LOCAL_KEY}"},
              {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
             ("POST", "/v1/messages", {"x-api-key": "wrong"},
              {"model": FLASH, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
             ("GET", "/no/such/route", {}, None)]
    statuses = []
    for method, path, headers, body in cases:
        direct = httpx.request(method, gw.url + path, headers=headers, json=body, timeout=10)
        proxied = http.request(method, proxy.url + path, headers=headers, json=body)
        assert proxied.status_code == direct.status_code >= 400, path
        assert proxied.headers["content-type"] == direct.headers["content-type"]
        assert proxied.json() == direct.json()
        statuses.append(proxied.status_code)
    assert statuses[:2] == [401, 404]


def test_gateway_down_is_nginx_json_502(tmp_path_factory):
    dead = free_port()              # nothing listens there
    server = Nginx(tmp_path_factory.mktemp("nginx-502"), dead).wait_ready()
    try:
        with httpx.Client(verify=server.ssl_context(), http2=HTTP2, timeout=10) as client:
            for r in (client.get(server.url + "/health"),
                      client.post(server.url + "/v1/messages", json={"model": FLASH})):
                err = assert_openai_envelope(r, 502, "gateway_unreachable")
                assert err["type"] == "server_error" and r.headers["retry-after"] == "5"
    finally:
        server.stop()


# ---- forwarded headers ---------------------------------------------------------------------

def test_forwarded_for_and_proto_reach_gunicorn(gw, proxy, http):
    marker = uuid.uuid4().hex
    # a client claiming another address: nginx (the edge) replaces it with the real one, and
    # the gateway believes nginx (a trusted proxy) about it and about the scheme
    assert http.get(proxy.url + f"/{marker}",
                    headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 401   # no key
    (line,) = access_lines(gw, marker)
    assert line.startswith(f'127.0.0.1 "GET /{marker}" 401 '), line
    assert " scheme=https " in line and "203.0.113.7" not in line


def test_gunicorn_trusts_the_scheme_only_from_forwarded_allow_ips(fake_server, tmp_path_factory,
                                                                 gw):
    # the default FORWARDED_ALLOW_IPS (127.0.0.1,::1) trusts a proxy on the same host...
    marker = uuid.uuid4().hex
    httpx.get(gw.url + f"/{marker}", headers={"X-Forwarded-Proto": "https",
                                              "X-Forwarded-For": "198.51.100.1"})
    (line,) = access_lines(gw, marker)
    assert line.startswith(f'198.51.100.1 "GET /{marker}" 401 ') and " scheme=https " in line
    # ...and a peer not listed is not believed: the client is the peer, the scheme stays http
    untrusted = start_gunicorn(fake_server, tmp_path_factory, "nginx-untrusted", workers=1,
                               env={"FORWARDED_ALLOW_IPS": "192.0.2.1"})
    try:
        httpx.get(untrusted.url + f"/{marker}", headers={"X-Forwarded-Proto": "https",
                                                         "X-Forwarded-For": "198.51.100.1"})
        (line,) = access_lines(untrusted, marker)
        assert line.startswith(f'127.0.0.1 "GET /{marker}" 401 ') and " scheme=http " in line
        assert "198.51.100.1" not in line
    finally:
        untrusted.stop()


# ---- last: the silent stream ---------------------------------------------------------------

@pytest.mark.timeout(SILENCE + 60)     # it waits out the rest of the silence, then the teardown
def test_silent_stream_survived_on_keepalives(silent_stream):
    silent_stream.join(timeout=SILENCE + 30)
    assert not silent_stream.is_alive(), "the silent stream did not end"
    assert silent_stream.error is None, repr(silent_stream.error)
    assert silent_stream.status == 200 and silent_stream.text == "Hello world"
    assert silent_stream.elapsed >= SILENCE
    # keepalive_interval is 0.5 s in the test config: they came through as sent
    assert silent_stream.keepalives >= SILENCE, silent_stream.keepalives
    print(f"\nsilent stream: {silent_stream.elapsed:.1f} s, {silent_stream.keepalives} keep-alives")
