"""Raw HTTP/1.1 over a loopback socket, for requests no client library would send."""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass

from tests.conftest import LOCAL_KEY


@dataclass
class RawResponse:
    status: int
    headers: dict           # lower-case names; the last value of a repeated header
    body: bytes
    raw: bytes              # everything the server sent before closing

    def json(self):
        return json.loads(self.body)


def exchange(port: int, data: bytes, timeout: float = 10.0,
             half_close: bool = False) -> RawResponse:
    """Send ``data``, read until the server closes (or ``timeout``), parse the first response.

    ``half_close`` shuts the sending side after ``data`` (a body that ends early)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        raw = b""
        try:
            while chunk := sock.recv(65536):
                raw += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return parse(raw)


def parse(raw: bytes) -> RawResponse:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    body = rest[:int(length)] if length and length.isdigit() else rest
    return RawResponse(status, headers, body, raw)


def post(path: str, body: bytes, *, chunks: list[bytes] | None = None, extra: bytes = b"",
         key: str | None = LOCAL_KEY, close: bool = True) -> bytes:
    """A POST request with ``body`` (Content-Length), or with ``chunks`` sent as they are after
    ``Transfer-Encoding: chunked`` (so they may be malformed)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            ).encode() + extra
    if key:
        head += f"Authorization: Bearer {key}\r\n".encode()
    if close:
        head += b"Connection: close\r\n"
    if chunks is not None:
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def sse_data(raw: bytes) -> list:
    """The ``data:`` payloads of an SSE body, JSON-decoded (``[DONE]`` kept as a string)."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
