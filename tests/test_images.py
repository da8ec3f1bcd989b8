"""Image inputs: data URLs pass, remote URLs are refused by default and fetched safely when enabled."""
from __future__ import annotations

import base64
import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway import errors
from gateway.images import RemoteImages, from_data_url, public_address, rfc6052_ipv4
from tests.conftest import free_port, gateway_config

PNG_BYTES = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==")


class ImageHost:
    """A tiny HTTP(S) server on a loopback address that records the paths it was asked for.

    ``name`` puts a host name in ``url`` instead of the address (the test resolves it); ``tls``
    serves HTTPS and records the SNI name each handshake asked for.
    """

    def __init__(self, host: str, name: str | None = None, tls: ssl.SSLContext | None = None):
        self.paths: list[str] = []
        self.host_headers: list[str] = []
        self.sni: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.paths.append(self.path)
                owner.host_headers.append(self.headers.get("Host"))
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
        self.port = self.server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda sock, server_name, ctx: owner.sni.append(server_name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{name or host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host():
    h = ImageHost("127.0.0.1")
    yield h
    h.close()


@pytest.fixture
def connects(monkeypatch):
    """Every (address, port) a socket connects to during the test; off loopback is stopped first.

    A refused target must leave this empty -- refused before any connection, so an open and a
    closed port look the same -- and no test may send traffic off the machine even if the guard
    under test is broken.
    """
    seen: list[tuple[str, int]] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def record(address):
        if isinstance(address, tuple):
            seen.append((address[0], address[1]))
            if not ipaddress.ip_address(address[0].split("%", 1)[0]).is_loopback:
                raise OSError(f"test: refusing to connect off loopback to {address[0]}")

    def connect(sock, address):
        record(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        record(address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return seen


@pytest.fixture
def dns(monkeypatch):
    """A resolver for made-up names: ``dns.names[name]`` is a list of answers, one per lookup.

    The last answer repeats.  IP literals resolve as usual; any other name does not resolve, so
    no test ever asks a real DNS server.  ``dns.lookups`` records the names looked up.
    """
    real = socket.getaddrinfo

    class Resolver:
        names: dict[str, list[list[str]]] = {}
        lookups: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            Resolver.lookups.append(host)
            answers = Resolver.names.get(host)
            if not answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            ips = answers.pop(0) if len(answers) > 1 else answers[0]
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM,
                     socket.IPPROTO_TCP, "", (ip, port, 0, 0) if ":" in ip else (ip, port))
                    for ip in ips]
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return Resolver


def loader(**kw) -> RemoteImages:
    return RemoteImages(True, kw.pop("max_bytes", 1 << 20), 5, **kw)


REFUSED = "p: the image URL points to a private or local address, which this gateway never fetches"


def refused(url: str, **kw) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as info:
        loader(**kw).load(url, "p")
    assert str(info.value) == REFUSED and info.value.code == "remote_image_refused"
    return info.value


@pytest.mark.parametrize("ip,ok", [
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("0.0.0.0", False), ("100.64.0.1", False), ("::1", False),
    ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False), ("224.0.0.1", False),
    ("8.8.8.8", True), ("2001:4860:4860::8888", True)])
def test_only_public_addresses_are_fetchable(ip, ok):
    assert public_address(ip) is ok


@pytest.mark.parametrize("ip,ok", [
    # IPv4-compatible ::a.b.c.d, IPv4-translated ::ffff:0:a.b.c.d
    ("::7f00:1", False), ("::10.0.0.1", False), ("::8.8.8.8", True),
    ("::ffff:0:127.0.0.1", False), ("::ffff:0:8.8.8.8", True),
    # NAT64, well-known prefix (RFC 6052 /96): classified by the last 32 bits only
    ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::808:808", True),
    # NAT64, local-use prefix (RFC 8215): 127.0.0.1 per the /48 layout, around octet u
    ("64:ff9b:1:7f00:0:100::", False),
    ("64:ff9b:1::7f00:1", False),                    # /96 reading 127.0.0.1
    ("64:ff9b:1:808:8:808:7f00:1", False),           # 8.8.8.8 at /48 and /56, but 127.0.0.1 at /96
    ("64:ff9b:1:808:8:808:808:808", True),           # 8.8.8.8 in every layout
    ("64:ff9b:1::808:808", False),                   # public at /96, 0.0.0.0 at /48: refused
    # 6to4: bits 16-47
    ("2002:7f00:1::1", False), ("2002:c0a8:101::1", False), ("2002:808:808::1", True),
    # Teredo: server in bits 32-63, client = last 32 bits inverted; both must be public
    ("2001:0:a00:1::f7f7:f7f7", False),              # server 10.0.0.1, client 8.8.8.8
    ("2001:0:808:808::80ff:fffe", False),            # server 8.8.8.8, client 127.0.0.1
    ("2001:0:808:808::f7f7:f7f7", True),             # both 8.8.8.8
    # unassigned (IETF-reserved) space is never fetched, ISATAP needs a public IPv4 too
    ("64:ff9b:0:0:1::", False), ("1::1", False),
    ("2001:4860::5efe:a00:1", False), ("2001:4860::200:5efe:808:808", True)])
def test_ipv6_forms_that_embed_ipv4_are_classified_by_the_ipv4_address(ip, ok):
    assert public_address(ip) is ok


@pytest.mark.parametrize("length,ip", [           # RFC 6052 section 2.4's table, 192.0.2.33
    (32, "2001:db8:c000:221::"), (40, "2001:db8:1c0:2:21::"), (48, "2001:db8:122:c000:2:2100::"),
    (56, "2001:db8:122:3c0:0:221::"), (64, "2001:db8:122:344:c0:2:2100:0"),
    (96, "2001:db8:122:344::192.0.2.33")])
def test_every_rfc6052_layout_decodes(length, ip):
    assert rfc6052_ipv4(ipaddress.IPv6Address(ip), length) == ipaddress.IPv4Address("192.0.2.33")
    assert rfc6052_ipv4(ipaddress.IPv6Address("64:ff9b:1:7f00:0:100::"), 48) == \
        ipaddress.IPv4Address("127.0.0.1")


def test_data_urls_are_taken_as_they_are():
    img = from_data_url("data:image/PNG;base64,AAAA", "p")
    assert img.media_type == "image/png" and img.data_url == "data:image/PNG;base64,AAAA"
    with pytest.raises(errors.InvalidRequest, match="data URL"):
        from_data_url("data:text/plain;base64,AAAA", "p")


def test_remote_urls_are_refused_when_fetching_is_off(host):
    with pytest.raises(errors.InvalidRequest, match="fetch_remote_images") as info:
        RemoteImages(False, 1 << 20, 5).load(host.url + "/a.png", "p")
    assert info.value.code == "remote_image_refused" and host.paths == []


def test_loopback_is_refused_before_any_connection_is_opened(host, connects):
    with pytest.raises(errors.InvalidRequest, match="private or local") as info:
        loader().load(host.url + "/a.png", "messages[0].content[1].image_url.url")
    assert info.value.param == "messages[0].content[1].image_url.url"
    assert host.paths == [] and connects == []      # refused before connecting, not after


@pytest.mark.parametrize("host_part", [
    "[::7f00:1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "[64:ff9b:1:7f00:0:100::]",
    "[2002:7f00:1::1]", "[2001:0:a00:1::f7f7:f7f7]", "[2001:0:808:808::80ff:fffe]"])
def test_embedded_loopback_and_private_literals_are_refused_unconnected(host_part, connects):
    refused(f"http://{host_part}:{free_port()}/a.png")
    assert connects == []


def test_open_and_closed_ports_get_the_same_answer(host, dns, connects):
    listener = socket.create_server(("127.0.0.1", 0))     # open, never answers
    listener.settimeout(0.2)
    dns.names = {"one.internal": [["127.0.0.1"]], "many.internal": [["10.0.0.1", "127.0.0.1"]]}
    try:
        answers = {str(refused(url)) for url in (
            host.url + "/a.png",                                        # open, serving HTTP
            f"http://127.0.0.1:{listener.getsockname()[1]}/a.png",      # open, silent
            f"http://127.0.0.1:{free_port()}/a.png",                    # closed
            f"http://one.internal:{host.port}/a.png",                   # a name, one address
            f"http://many.internal:{free_port()}/a.png")}               # a name, several
        assert answers == {REFUSED}
        with pytest.raises(TimeoutError):
            listener.accept()                                           # nothing connected
        assert connects == [] and host.paths == []
    finally:
        listener.close()


@pytest.mark.parametrize("ips", [["8.8.8.8", "127.0.0.1"], ["127.0.0.1", "8.8.8.8"],
                                 ["2001:4860:4860::8888", "fd00::1"]])
def test_a_name_with_any_private_address_is_refused(ips, dns, connects):
    dns.names = {"mixed.example": [ips]}
    refused("http://mixed.example/a.png")
    assert connects == [] and dns.lookups == ["mixed.example"]


def test_a_name_that_does_not_resolve_gets_its_own_answer(dns, connects):
    with pytest.raises(errors.InvalidRequest) as info:
        loader().load("http://nowhere.example/a.png", "p")
    assert str(info.value) == "p: the image URL's host name does not resolve to any address"
    assert info.value.code is None and connects == []


def test_allowed_fetches_connect_to_the_checked_address_and_keep_the_name(host, dns, connects):
    other = ImageHost("127.0.0.2")
    try:
        # A rebinding resolver: checked as 127.0.0.1, it would answer 127.0.0.2 when asked again.
        dns.names = {"images.example": [["127.0.0.1"], ["127.0.0.2"]]}
        only_first = lambda ip: ip == "127.0.0.1"      # noqa: E731 - the first host is "public"
        img = loader(address_ok=only_first).load(f"http://images.example:{host.port}/a.png", "p")
        assert img.media_type == "image/png"
        assert dns.lookups == ["images.example"]        # one answer, checked and used
        assert connects == [("127.0.0.1", host.port)] and other.paths == []
        assert host.host_headers == [f"images.example:{host.port}"]
    finally:
        other.close()


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_https_fetches_keep_sni_and_certificate_checks_on_the_name(tmp_path, dns, connects):
    cert, key = _self_signed(tmp_path, "images.example")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    secure = ImageHost("127.0.0.1", name="images.example", tls=tls)
    try:
        dns.names = {"images.example": [["127.0.0.1"]]}
        images = loader(address_ok=lambda ip: True)
        images.session.verify = cert            # trust the test's certificate, for that name
        assert images.load(secure.url + "/a.png", "p").media_type == "image/png"
        assert secure.sni == ["images.example"]
        assert secure.host_headers == [f"images.example:{secure.port}"]
        assert connects == [("127.0.0.1", secure.port)]
        # The certificate is checked against the name, not the address connected to.
        with pytest.raises(errors.InvalidRequest, match="could not fetch"):
            loader(address_ok=lambda ip: True).load(
                f"https://127.0.0.1:{secure.port}/a.png", "p")
    finally:
        secure.close()


def test_allowed_hosts_are_fetched_and_inlined(host):
    img = loader(address_ok=lambda ip: True).load(host.url + "/a.png", "p")
    assert img.media_type == "image/png"
    assert img.data_url == "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()


def test_size_limit_and_content_type_are_enforced(host):
    with pytest.raises(errors.RequestTooLarge):
        loader(address_ok=lambda ip: True, max_bytes=10_000).load(host.url + "/big.png", "p")
    with pytest.raises(errors.InvalidRequest, match="did not return an image"):
        loader(address_ok=lambda ip: True).load(host.url + "/page", "p")


def test_a_redirect_to_a_forbidden_address_is_refused_before_it_is_followed(host, dns, connects):
    other = ImageHost("127.0.0.2")
    dns.names = {"other.example": [["127.0.0.2"]]}
    try:
        only_first = lambda ip: ip == "127.0.0.1"      # noqa: E731 - the first host is "public"
        for target in (other.url, f"http://other.example:{other.port}"):
            refused(f"{host.url}/redirect?to={target}/a.png", address_ok=only_first)
        assert len(host.paths) == 2 and other.paths == []
        assert {ip for ip, _ in connects} == {"127.0.0.1"}      # 127.0.0.2 never connected to
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


def test_through_the_api_open_and_closed_ports_give_identical_bodies(fake, tmp_path, host):
    from gateway import create_app
    c = create_app(gateway_config(fake.url, tmp_path, fetch_remote_images=True)).test_client()

    def answer(url):
        r = c.post("/v1/chat/completions", headers={"x-api-key": "test-local-key"}, json={
            "model": "moonshotai/Kimi-K3",
            "messages": [{"role": "user", "content": [{"type": "image_url",
                                                       "image_url": {"url": url}}]}]})
        return r.status_code, r.get_data()

    open_port = answer(host.url + "/a.png")
    assert open_port[0] == 400
    assert answer(f"http://127.0.0.1:{free_port()}/a.png") == open_port
    assert answer(f"http://[64:ff9b::7f00:1]:{host.port}/a.png") == open_port
    assert host.paths == [] and fake.requests == []
