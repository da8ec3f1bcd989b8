"""Server-sent events, as bytes split anywhere arrive: the framing of the Provider API's streams.

Only what a client of an SSE API needs: ``event:`` and ``data:`` fields, events ended by a
blank line, comments skipped, ``\\r\\n`` tolerated.  Lines are split as bytes before anything is
decoded, so a chunk boundary inside a line or a UTF-8 character costs nothing.
"""
from __future__ import annotations

from .. import errors


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


class EventDecoder:
    """Base of the Provider API decoders: SSE events in, canonical events out.

    Feed it chunks as they arrive, then call ``end()`` at EOF.  A subclass handles each event's
    data in ``_data(data, events)`` and sets ``done`` at its format's last event; ``_eof`` may
    still finish a stream whose final marker alone is missing.  Ending before ``done`` raises,
    naming ``terminal``: a cut stream is never a quiet stop.
    """

    terminal = "its final event"

    def __init__(self):
        self._sse = SSEParser()
        self.done = False

    def feed(self, chunk: bytes) -> list:
        if self.done:
            return []
        events: list = []
        for _, data in self._sse.feed(chunk):
            self._data(data, events)
            if self.done:
                break
        return events

    def end(self) -> list:
        events: list = []
        if not self.done:
            for _, data in self._sse.end():
                self._data(data, events)
        if not self.done:
            self._eof(events)
        if not self.done:
            raise errors.UpstreamError(
                f"Command Code ended the stream before it finished (no {self.terminal}): the "
                "answer is incomplete", code="upstream_truncated")
        return events

    def _data(self, data: bytes, events: list) -> None:
        raise NotImplementedError

    def _eof(self, events: list) -> None:
        """Called at EOF before ``done``: finish here if the stream is complete enough."""
