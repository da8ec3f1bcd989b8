"""Image inputs: data URLs pass, remote URLs are refused by default and fetched safely when enabled."""
from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway import errors
from gateway.images import RemoteImages, from_data_url, public_address
from tests.conftest import gateway_config

PNG_BYTES = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==")


class ImageHost:
    """A tiny HTTP server on a loopback address that records the paths it was asked for."""

    def __init__(self, host: str):
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.paths.append(self.path)
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("?to=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = PNG_BYTES * (2000 if self.path == "/big.png" else 1)
                ctype = "text/html" if self.path == "/page" else "image/png"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host():
    h = ImageHost("127.0.0.1")
    yield h
    h.close()


def loader(**kw) -> RemoteImages:
    return RemoteImages(True, kw.pop("max_bytes", 1 << 20), 5, **kw)


@pytest.mark.parametrize("ip,ok", [
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("0.0.0.0", False), ("100.64.0.1", False), ("::1", False),
    ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False), ("224.0.0.1", False),
    ("8.8.8.8", True), ("2001:4860:4860::8888", True)])
def test_only_public_addresses_are_fetchable(ip, ok):
    assert public_address(ip) is ok


def test_data_urls_are_taken_as_they_are():
    img = from_data_url("data:image/PNG;base64,AAAA", "p")
    assert img.media_type == "image/png" and img.data_url == "data:image/PNG;base64,AAAA"
    with pytest.raises(errors.InvalidRequest, match="data URL"):
        from_data_url("data:text/plain;base64,AAAA", "p")


def test_remote_urls_are_refused_when_fetching_is_off(host):
    with pytest.raises(errors.InvalidRequest, match="fetch_remote_images") as info:
        RemoteImages(False, 1 << 20, 5).load(host.url + "/a.png", "p")
    assert info.value.code == "remote_image_refused" and host.paths == []


def test_loopback_is_refused_before_any_request_is_sent(host):
    with pytest.raises(errors.InvalidRequest, match="private or local") as info:
        loader().load(host.url + "/a.png", "messages[0].content[1].image_url.url")
    assert info.value.param == "messages[0].content[1].image_url.url"
    assert host.paths == []         # refused on connect, not after the GET went out


def test_allowed_hosts_are_fetched_and_inlined(host):
    img = loader(address_ok=lambda ip: True).load(host.url + "/a.png", "p")
    assert img.media_type == "image/png"
    assert img.data_url == "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()


def test_size_limit_and_content_type_are_enforced(host):
    with pytest.raises(errors.RequestTooLarge):
        loader(address_ok=lambda ip: True, max_bytes=10_000).load(host.url + "/big.png", "p")
    with pytest.raises(errors.InvalidRequest, match="did not return an image"):
        loader(address_ok=lambda ip: True).load(host.url + "/page", "p")


def test_a_redirect_to_a_forbidden_address_is_refused_before_it_is_followed(host):
    other = ImageHost("127.0.0.2")
    try:
        only_first = lambda ip: ip == "127.0.0.1"      # noqa: E731 - the first host is "public"
        with pytest.raises(errors.InvalidRequest, match="private or local"):
            loader(address_ok=only_first).load(f"{host.url}/redirect?to={other.url}/a.png", "p")
        assert host.paths and other.paths == []
    finally:
        other.close()


def test_enabled_fetching_through_the_api_still_refuses_local_addresses(fake, tmp_path, host):
    from gateway import create_app
    c = create_app(gateway_config(fake.url, tmp_path, fetch_remote_images=True)).test_client()
    r = c.post("/v1/chat/completions", headers={"x-api-key": "test-local-key"}, json={
        "model": "moonshotai/Kimi-K3",
        "messages": [{"role": "user", "content": [{"type": "image_url",
                                                   "image_url": {"url": host.url + "/a.png"}}]}]})
    assert r.status_code == 400 and r.json["error"]["code"] == "remote_image_refused"
    assert host.paths == [] and fake.requests == []
