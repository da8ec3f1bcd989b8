"""An in-memory route, beside the contract it fakes (as httpx keeps ``MockTransport`` beside its
``BaseTransport``): for testing what sits above a route -- ``chat.py``, ``relay.py``, the codecs --
without HTTP, a fake server or a thread waiting on a socket.

``FakeRoute(batches)`` plays the given lists of canonical events to every stream it opens, and
records what it was opened with; it can fail as Command Code does -- at open (the answer's
status), or after some batches (an in-band error, a cut stream) -- and hold a stream open until
it is aborted (an upstream gone silent).
"""
from __future__ import annotations

import threading

from .. import errors, keys
from ..canonical import ChatRequest
from .base import UpstreamStream


class FakeStream(UpstreamStream):
    """One call on a :class:`FakeRoute`: its batches, then its failure (if any)."""

    route_name = "fake"

    def __init__(self, route: "FakeRoute", req: ChatRequest, key: str):
        super().__init__()
        self.route = route
        self.req = req
        self.key = key
        self.connected = False
        self._woken = threading.Event()
        self._hold(self._woken.set)         # abort() wakes a stream held open

    def connect(self) -> None:
        if not self.connected:
            self.connected = True
            if self.route.open_error is not None:
                raise self.route.open_error

    def __iter__(self):
        self.connect()
        route, n = self.route, len(self.route.batches)
        fail_at = n if route.error_after is None else min(route.error_after, n)
        for i in range(n + 1):              # before each batch, and once after the last
            if i == route.hold_after:
                self._woken.wait()
            if self.aborted:
                return
            if i == fail_at and route.error is not None:
                raise route.error
            if i < n:
                yield list(route.batches[i])


class FakeRoute:
    """A :class:`~gateway.upstream.base.Route` that plays ``batches`` (lists of canonical events).

    * ``open_error``: raised when a stream connects (first iteration), before any event -- a
      refused key, a 403, a 429 with ``retry_after``;
    * ``error``: raised after ``error_after`` batches (None: after all of them) -- an in-band
      error or a truncated stream;
    * ``hold_after``: after that many batches the stream blocks until :meth:`abort` (from any
      thread), then ends quietly -- a silent upstream, for keep-alive and disconnect tests.

    ``opened`` lists ``(request, key)`` per :meth:`open`; ``streams`` the streams, whose
    ``aborted`` says whether the caller stopped them.  A missing key raises the 503 every real
    route raises (``keys.require``).
    """

    def __init__(self, batches=(), *, open_error: errors.GatewayError | None = None,
                 error: errors.GatewayError | None = None, error_after: int | None = None,
                 hold_after: int | None = None):
        self.batches = [list(b) for b in batches]
        self.open_error = open_error
        self.error = error
        self.error_after = error_after
        self.hold_after = hold_after
        self.opened: list[tuple[ChatRequest, str]] = []
        self.streams: list[FakeStream] = []

    def open(self, req: ChatRequest, key: str) -> FakeStream:
        key = keys.require(key)
        self.opened.append((req, key))
        stream = FakeStream(self, req, key)
        self.streams.append(stream)
        return stream

    @property
    def aborted(self) -> bool:
        """Whether the last stream opened was aborted (False when none was opened)."""
        return bool(self.streams) and self.streams[-1].aborted
