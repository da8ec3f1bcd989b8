"""A request while it is still arriving: how long a client may take to send it.

gunicorn's gthread worker hands a new connection to a thread once its first byte is in, and the
thread then reads the request line, the headers and the body with blocking reads and no
deadline.  A client that sends half a request and stops (by accident, or 500 of them on
purpose: a slowloris) holds a thread each until it gives up, and once every thread is held
nobody else is served, ``/health`` included, no key needed.

So the gateway's worker (gateway/worker.py) reads each request's head, and the start of its
body, in its main loop, where a waiting connection costs a file descriptor and a buffer but no
thread, and hands it to a thread only once it is all there (:class:`Arrival`).  What a thread
still reads itself (a body longer than the main loop buffers, a chunked body, a request
pipelined behind another) is read through :class:`PacedUnreader`, which gives up on a client
that falls below the same minimum rate.  Either way a client that is too slow is dropped, and
``/health`` and model calls go on being served.

The limits are generous for any real client (an SDK or nginx sends its head in one packet and
its body as fast as the link allows) and tight for one that stalls:

- the request line and headers within ``HEAD_TIMEOUT`` seconds of the connection opening (or of
  a kept-alive connection's next request starting);
- the body at ``MIN_BODY_RATE`` bytes a second on average, after ``BODY_GRACE`` seconds.
"""
from __future__ import annotations

import socket
import time

from gunicorn.http.errors import NoMoreData
from gunicorn.http.unreader import SocketUnreader

HEAD_TIMEOUT = 5.0
BODY_GRACE = 5.0
MIN_BODY_RATE = 16 * 1024
#: a head longer than this is handed to a thread unfinished (gunicorn's parser then refuses it,
#: or reads the rest at the minimum rate); gunicorn's own limits allow about 800 KB
HEAD_MAX = 64 * 1024
#: at most this much of a body is gathered in the main loop; a thread reads the rest, paced
BODY_MAX = 256 * 1024

# the blank line that ends a head; gunicorn answers a bare-LF head itself (400), so it must be
# handed over too rather than waited on
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class TooSlow(NoMoreData, TimeoutError):
    """The client sent its request too slowly; the connection is dropped.

    A :class:`NoMoreData` so gunicorn handles it as the client leaving (a debug line, the
    connection closed); a :class:`TimeoutError` so the app's body reader, which sees it behind
    werkzeug's ``ClientDisconnected``, answers 408 rather than "the body ended early"."""

    def __init__(self, what: str):
        super().__init__(b"")
        self.what = what

    def __str__(self):
        return f"the client sent its {self.what} too slowly"


def _head_end(buf: bytearray) -> int:
    """Where the head ends (just past its blank line), or -1 while it has not."""
    ends = [i + len(mark) for mark in _HEAD_ENDS if (i := buf.find(mark)) >= 0]
    return min(ends) if ends else -1


def _body_wanted(head: bytes) -> int:
    """How many body bytes to gather before handing over: 0 when a thread must take it from
    here (no body, a chunked one, ``Expect: 100-continue``, whose client waits for an answer
    before sending, or headers gunicorn will refuse anyway)."""
    length = None
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name in (b"transfer-encoding", b"expect"):
            return 0
        if name == b"content-length":
            if length is not None:
                return 0                    # two of them: gunicorn's 400
            value = value.strip()
            if not value.isdigit():
                return 0
            length = int(value)
    return min(length or 0, BODY_MAX)


class Arrival:
    """One request arriving on a connection, gathered in the worker's main loop.

    :meth:`feed` takes what the socket gave and says whether the request is ready to hand to a
    thread; :meth:`overdue` says whether the client has fallen behind its deadline.  No socket
    here: the worker does the reading, so this can be tested with plain bytes and times.
    """

    __slots__ = ("buf", "started", "head_at", "head_len", "wanted")

    def __init__(self, now: float):
        self.buf = bytearray()
        self.started = now
        self.head_at: float | None = None       # when the head was complete
        self.head_len = 0
        self.wanted = 0                         # bytes to gather in all, once the head is in

    def feed(self, data: bytes, now: float) -> bool:
        """Add ``data``; True when the request (its head, and its body up to ``BODY_MAX``) is
        all here, or the head has outgrown ``HEAD_MAX``: a thread takes it from there."""
        self.buf += data
        if self.head_at is None:
            end = _head_end(self.buf)
            if end < 0:
                return len(self.buf) > HEAD_MAX
            self.head_at, self.head_len = now, end
            self.wanted = end + _body_wanted(bytes(self.buf[:end]))
        return len(self.buf) >= self.wanted

    def overdue(self, now: float) -> str | None:
        """What the client is late with (``"request headers"``, ``"request body"``), or None."""
        if self.head_at is None:
            return "request headers" if now - self.started > HEAD_TIMEOUT else None
        if _behind(len(self.buf) - self.head_len, self.head_at, now):
            return "request body"
        return None


def _behind(received: int, since: float, now: float) -> bool:
    """Whether ``received`` body bytes since ``since`` fall below the minimum rate."""
    return received < (now - since - BODY_GRACE) * MIN_BODY_RATE


class PacedUnreader(SocketUnreader):
    """gunicorn's socket reader, with every read bounded by the minimum rate.

    The thread-side half of :mod:`arrival`: before each ``recv`` the socket's timeout is set to
    the time left before the bytes read so far (since :meth:`restart`) fall below
    ``MIN_BODY_RATE`` after ``BODY_GRACE``, and put back to blocking afterwards, so the writes of
    the response (a stream a client may read slowly) are never bounded by it.
    """

    def __init__(self, sock, max_chunk=8192):
        super().__init__(sock, max_chunk)
        self.restart(time.monotonic())

    def restart(self, now: float) -> None:
        """A new request begins: its pace counts from ``now``."""
        self._since, self._received = now, 0

    def chunk(self, size_hint=None):
        left = self._since + BODY_GRACE + self._received / MIN_BODY_RATE - time.monotonic()
        if left <= 0:
            raise TooSlow("request")
        self.sock.settimeout(left)
        try:
            data = super().chunk(size_hint)
        except (socket.timeout, TimeoutError):
            raise TooSlow("request") from None
        finally:
            self.sock.settimeout(None)
        self._received += len(data)
        return data
