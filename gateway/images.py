"""Images in requests: ``data:`` URLs pass through; http(s) URLs are refused or fetched safely.

Upstream takes images only inline (the CLI never sends a URL), so a remote image must be
downloaded by the gateway.  That makes the gateway an HTTP client acting for its callers, so it
is off by default (``fetch_remote_images``) and, when on, bounded: a size limit, a timeout, no
redirects to unchecked hosts, and never an address on loopback, link-local, private or other
non-public ranges -- checked on the socket actually connected, before any byte is sent, so DNS
tricks cannot turn the fetch toward the gateway's own network.
"""
from __future__ import annotations

import base64
import ipaddress
import re
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import errors
from .canonical import Image

_DATA_URL = re.compile(r"^data:(image/[\w.+-]+);base64,", re.I)
_MAX_REDIRECTS = 3


def from_data_url(url: str, param: str) -> Image:
    m = _DATA_URL.match(url)
    if not m or len(url) == m.end():
        raise errors.InvalidRequest(
            f"{param}: expected a data URL of the form data:image/<type>;base64,<data>", param=param)
    return Image(url, m.group(1).lower())


def public_address(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


class AddressRefused(Exception):
    """The connection reached an address we never fetch from; raised before a byte is sent."""


def _checked_adapter(address_ok) -> HTTPAdapter:
    """An adapter whose connections verify the peer address right after connecting."""
    def checked(conn_cls):
        class Checked(conn_cls):
            def _new_conn(self):
                sock = super()._new_conn()
                if not address_ok(sock.getpeername()[0]):
                    sock.close()
                    raise AddressRefused()
                return sock
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

    def _fetch(self, url: str, param: str) -> Image:
        if self._session is None:
            s = requests.Session()
            s.trust_env = False     # a proxy would hide the address we must check
            adapter = _checked_adapter(self._address_ok)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            self._session = s
        for _ in range(_MAX_REDIRECTS + 1):
            if not urlsplit(url).hostname:
                raise errors.InvalidRequest(f"{param}: the image URL has no host", param=param)
            try:
                resp = self._session.get(url, stream=True, timeout=self.timeout,
                                         allow_redirects=False, headers={"Accept": "image/*"})
            except AddressRefused:
                raise errors.InvalidRequest(
                    f"{param}: the image URL points to a private or local address, which this "
                    "gateway never fetches", param=param, code="remote_image_refused") from None
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
