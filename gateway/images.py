"""Images in requests: ``data:`` URLs pass through; http(s) URLs are refused or fetched safely.

Upstream takes images only inline (the CLI never sends a URL), so a remote image must be
downloaded by the gateway.  That makes the gateway an HTTP client acting for its callers, so it
is off by default (``fetch_remote_images``) and, when on, bounded: a size limit, a timeout, no
redirects to unchecked hosts, and never an address on loopback, link-local, private or other
non-public ranges.  The host is resolved by the gateway itself and every address it resolves to
is checked before any connection is opened -- so a caller cannot use the gateway as a port
scanner of its own network (an open and a closed internal port get the same answer) -- and the
socket is then connected to one of exactly those checked addresses, so a DNS answer that changes
between check and connect (rebinding) is never consulted.  The connected peer is checked once
more before a byte is sent, as a second guard.
"""
from __future__ import annotations

import base64
import ipaddress
import re
import socket
import sys
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from . import errors
from .canonical import Image

_DATA_URL = re.compile(r"^data:(image/[\w.+-]+);base64,", re.I)
_MAX_REDIRECTS = 3

_REFUSED = ("the image URL points to a private or local address, which this gateway never "
            "fetches")
_UNRESOLVED = "the image URL's host name does not resolve to any address"


def from_data_url(url: str, param: str) -> Image:
    m = _DATA_URL.match(url)
    if not m or len(url) == m.end():
        raise errors.InvalidRequest(
            f"{param}: expected a data URL of the form data:image/<type>;base64,<data>", param=param)
    return Image(url, m.group(1).lower())


_V6 = ipaddress.IPv6Network
_MAPPED = _V6("::ffff:0:0/96")           # RFC 4291: IPv4-mapped
_TRANSLATED = _V6("::ffff:0:0:0/96")     # RFC 2765 (SIIT): IPv4-translated
_COMPATIBLE = _V6("::/96")               # RFC 4291 (deprecated): IPv4-compatible, incl. :: and ::1
_NAT64_WELL_KNOWN = _V6("64:ff9b::/96")  # RFC 6052: the well-known prefix, /96 layout
_NAT64_LOCAL = _V6("64:ff9b:1::/48")     # RFC 8215: local use, any RFC 6052 length from /48 on
_6TO4 = _V6("2002::/16")                 # RFC 3056: IPv4 in bits 16-47
_TEREDO = _V6("2001::/32")               # RFC 4380: server in bits 32-63, client inverted
_RFC6052_LENGTHS = (32, 40, 48, 56, 64, 96)


def rfc6052_ipv4(addr: ipaddress.IPv6Address, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address that RFC 6052 section 2.2 places in ``addr`` under a ``/prefix_len`` prefix.

    For prefixes shorter than /96 the 32 bits follow the prefix but skip the reserved octet "u"
    (bits 64-71), so they are split around it: /32 -> bits 32-63; /40 -> 40-63 and 72-79;
    /48 -> 48-63 and 72-87; /56 -> 56-63 and 72-95; /64 -> 72-103.  /96 -> the last 32 bits.
    """
    if prefix_len not in _RFC6052_LENGTHS:
        raise ValueError(f"RFC 6052 defines no /{prefix_len} layout")
    n = int(addr)
    if prefix_len == 96:
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    without_u = ((n >> 64) << 56) | (n & ((1 << 56) - 1))     # 120 bits: octet u cut out
    return ipaddress.IPv4Address((without_u >> (120 - prefix_len - 32)) & 0xFFFFFFFF)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses a translator or tunnel would deliver packets for ``addr`` to, or None.

    None means ``addr`` is not one of the forms that carry an IPv4 address in a fixed place.  A
    list is every IPv4 address the form can stand for: both Teredo ends, and for the local-use
    NAT64 prefix one reading per RFC 6052 layout, because the operator picks the prefix length
    (/48 up to /96) and nothing in the address says which one -- an attacker who can pick the
    bits could otherwise put a private address where a /96 translator reads it and a public one
    where a /48 reading would look.
    """
    if addr in _MAPPED or addr in _TRANSLATED or addr in _COMPATIBLE or addr in _NAT64_WELL_KNOWN:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    if addr in _NAT64_LOCAL:
        return [rfc6052_ipv4(addr, n) for n in _RFC6052_LENGTHS if n >= _NAT64_LOCAL.prefixlen]
    if addr in _6TO4:
        return [ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF)]
    if addr in _TEREDO:
        server, client = addr.teredo
        return [server, client]
    return None


def _isatap_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address in an ISATAP interface id (RFC 5214: ``[02]00:5efe:a.b.c.d``), if any."""
    n = int(addr)
    if (n >> 32) & 0xFCFFFFFF == 0x00005EFE:     # the u/g bits of the first octet may be set
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    return None


def _public_ipv4(addr: ipaddress.IPv4Address) -> bool:
    return addr.is_global and not addr.is_multicast


def public_address(ip: str) -> bool:
    """Whether the gateway may connect to ``ip`` (a literal, optionally with an IPv6 zone).

    IPv4: globally reachable in Python's table (``is_global``) and not multicast.

    IPv6 that embeds an IPv4 address -- IPv4-mapped ``::ffff:0:0/96``, IPv4-translated
    ``::ffff:0:0:0/96``, IPv4-compatible ``::/96`` (so ``::`` and ``::1`` read as 0.0.0.0 and
    0.0.0.1), NAT64 ``64:ff9b::/96`` (last 32 bits) and ``64:ff9b:1::/48`` (every RFC 6052
    layout from /48 to /96), 6to4 ``2002::/16`` (bits 16-47), Teredo ``2001::/32`` (server in
    bits 32-63 and client in the last 32 bits inverted) -- is classified by the IPv4 address(es)
    it embeds *instead of* by its own range: the packets end up at that IPv4 address, and
    Python's verdict on these ranges says nothing about it (it varies by version: 64:ff9b::/96 is
    ``is_global`` in 3.11 and not in 3.13; Teredo never is).  Every embedded address must be
    public; one non-public reading refuses.  So ``64:ff9b::808:808`` is public, while
    ``64:ff9b::7f00:1``, ``2002:7f00:1::1`` and ``::7f00:1`` are not.  A consequence, chosen on
    purpose: an address in the local-use NAT64 prefix passes only if all its readings are public,
    which refuses most of them (``64:ff9b:1::808:808`` reads as 0.0.0.0 under /48).

    Any other IPv6: ``is_global``, not multicast, and not in the IETF-reserved, unassigned space
    (``is_reserved``: the rest of ``::/8`` and other never-allocated blocks -- nothing public
    lives there, and it keeps a form we do not decode from passing).  An ISATAP interface id
    (``...:0:5efe:a.b.c.d``) additionally needs its IPv4 address to be public, since an ISATAP
    router delivers to it over IPv4.
    """
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv4Address):
        return _public_ipv4(addr)
    embedded = embedded_ipv4(addr)
    if embedded is not None:
        return all(_public_ipv4(v4) for v4 in embedded)
    if not addr.is_global or addr.is_multicast or addr.is_reserved:
        return False
    isatap = _isatap_ipv4(addr)
    return isatap is None or _public_ipv4(isatap)


class AddressRefused(Exception):
    """The URL's host is or resolves to an address we never fetch from.

    Raised before any connection is opened (or, as the second guard, right after connecting,
    before a byte is sent).  Not an ``OSError``, so urllib3 and requests let it through unwrapped.
    """


class NameUnresolved(Exception):
    """The URL's host name has no address: its own answer, since the caller can fix a typo."""


def checked_addresses(host: str, port: int, address_ok) -> list[str]:
    """Every address ``host`` resolves to, in resolver order, or AddressRefused if any is refused.

    Every one and not just the first: a name with a public and a private record must not reach
    the private one when the public one fails to connect.  The caller connects only to the
    returned literals, so the check and the connection use the same DNS answer.
    """
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise NameUnresolved() from None
    ips = list(dict.fromkeys(info[4][0] for info in infos))
    if not ips:
        raise NameUnresolved()
    if not all(address_ok(ip) for ip in ips):
        raise AddressRefused()
    return ips


def _checked_adapter(address_ok) -> HTTPAdapter:
    """An adapter whose connections check the host's addresses first and connect only to them.

    ``self.host`` stays the name, so the Host header, TLS SNI and certificate verification are
    all for the name; only the socket is aimed at the checked literal.
    """
    def checked(conn_cls):
        class Checked(conn_cls):
            def _new_conn(self):
                err = None
                for ip in checked_addresses(self._dns_host, self.port, address_ok):
                    try:
                        sock = urllib3_connection.create_connection(
                            (ip, self.port), self.timeout, source_address=self.source_address,
                            socket_options=self.socket_options)
                    except OSError as exc:
                        err = exc
                        continue
                    if not address_ok(sock.getpeername()[0]):
                        sock.close()
                        raise AddressRefused()
                    sys.audit("http.client.connect", self, self.host, self.port)
                    return sock
                if isinstance(err, TimeoutError):
                    raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. "
                                                    f"(connect timeout={self.timeout})") from err
                raise NewConnectionError(self, f"Failed to establish a new connection: {err}") \
                    from err
        return Checked

    class Pool(HTTPConnectionPool):
        ConnectionCls = checked(HTTPConnection)

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = checked(HTTPSConnection)

    adapter = HTTPAdapter(max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}
    return adapter


class RemoteImages:
    """Fetches http(s) image URLs for a request, or refuses them when the config says so."""

    def __init__(self, enabled: bool, max_bytes: int, timeout: float, address_ok=public_address):
        self.enabled = enabled
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._address_ok = address_ok
        self._session = None

    def load(self, url: str, param: str) -> Image:
        if url.startswith("data:"):
            return from_data_url(url, param)
        if not url.lower().startswith(("http://", "https://")):
            raise errors.InvalidRequest(f"{param}: an image must be a data: URL or an http(s) URL",
                                        param=param)
        if not self.enabled:
            raise errors.InvalidRequest(
                f"{param}: this gateway does not fetch remote image URLs; send the image inline as "
                "a data: URL (base64), or set fetch_remote_images: true in the gateway's config",
                param=param, code="remote_image_refused")
        return self._fetch(url, param)

    @property
    def session(self) -> requests.Session:
        """The session every fetch goes through, made on first use with the checking adapter."""
        if self._session is None:
            s = requests.Session()
            s.trust_env = False     # a proxy would hide the address we must check
            adapter = _checked_adapter(self._address_ok)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            self._session = s
        return self._session

    def _fetch(self, url: str, param: str) -> Image:
        for _ in range(_MAX_REDIRECTS + 1):
            if not urlsplit(url).hostname:
                raise errors.InvalidRequest(f"{param}: the image URL has no host", param=param)
            try:
                resp = self.session.get(url, stream=True, timeout=self.timeout,
                                        allow_redirects=False, headers={"Accept": "image/*"})
            except AddressRefused:
                # One message for every refusal -- open or closed port, one address or several --
                # so the answer says nothing about the internal network behind the name.
                raise errors.InvalidRequest(f"{param}: {_REFUSED}", param=param,
                                            code="remote_image_refused") from None
            except NameUnresolved:
                raise errors.InvalidRequest(f"{param}: {_UNRESOLVED}", param=param) from None
            except requests.RequestException as exc:
                raise errors.InvalidRequest(f"{param}: could not fetch the image "
                                            f"({type(exc).__name__})", param=param) from None
            with resp:
                if resp.is_redirect:
                    url = urljoin(url, resp.headers.get("Location", ""))
                    continue
                if resp.status_code != 200:
                    raise errors.InvalidRequest(f"{param}: fetching the image gave HTTP "
                                                f"{resp.status_code}", param=param)
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not media_type.startswith("image/"):
                    raise errors.InvalidRequest(f"{param}: the URL did not return an image",
                                                param=param)
                data = self._read_limited(resp, param)
            return Image(f"data:{media_type};base64,{base64.b64encode(data).decode()}", media_type)
        raise errors.InvalidRequest(f"{param}: too many redirects fetching the image", param=param)

    def _read_limited(self, resp, param: str) -> bytes:
        chunks, size = [], 0
        for chunk in resp.iter_content(64 * 1024):
            size += len(chunk)
            if size > self.max_bytes:
                raise errors.RequestTooLarge(f"{param}: the image is larger than "
                                             f"{self.max_bytes // (1024 * 1024)} MB", param=param)
            chunks.append(chunk)
        return b"".join(chunks)
