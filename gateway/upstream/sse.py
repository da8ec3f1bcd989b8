"""Server-sent events, as bytes split anywhere arrive: the framing of the Provider API's streams.

Only what a client of an SSE API needs: ``event:`` and ``data:`` fields, events ended by a
blank line, comments skipped, ``\\r\\n`` tolerated.  Lines are split as bytes before anything is
decoded, so a chunk boundary inside a line or a UTF-8 character costs nothing.
"""
from __future__ import annotations


class SSEParser:
    """Feed it chunks; get back each complete event as ``(event name or None, data bytes)``."""

    def __init__(self):
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        self._buf += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._buf = self._buf.split(b"\n")
        out: list[tuple[str | None, bytes]] = []
        for line in lines:
            self._line(line, out)
        return out

    def end(self) -> list[tuple[str | None, bytes]]:
        """EOF: a last event that was not followed by its blank line still counts."""
        out: list[tuple[str | None, bytes]] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                out.append((self._event, b"\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line[:1] == b":":
            return                      # a comment (keep-alive)
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
