"""The contracts between the gateway and its upstream routes, written down.

Modelled on httpx's ``_transports/base.py``: a contract of two methods, and a fake beside it
(:mod:`gateway.upstream.fake`), so the code above a route -- ``chat.py``, ``relay.py``, the
codecs -- can be tested without HTTP.

* a :class:`Route` opens one model call for a canonical request and a Command Code key;
* the :class:`UpstreamStream` it returns is iterated for lists of canonical events (one list per
  network read that completed any), and may be aborted from any thread;
* a :class:`Decoder` turns a route's body bytes, split anywhere, into canonical events.

Which route a ``commandcode.mode`` names is :mod:`gateway.upstream.routes`' business.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol

from ..canonical import ChatRequest


class Decoder(Protocol):
    """Body bytes in, canonical events out: ``feed`` each chunk as it arrives, then ``end()`` at
    EOF unless ``done``.  ``end()`` before the format's last event raises: a cut stream is never a
    quiet stop.  Failures are raised as GatewayErrors."""

    done: bool

    def feed(self, chunk: bytes) -> list: ...

    def end(self) -> list: ...


class Route(Protocol):
    """One way of calling Command Code.

    ``open`` does not wait for the network: the request is sent when the stream is iterated (or
    ``connect``-ed), on whichever thread does that.  ``key`` is required -- the caller chose it
    (``Gateway.upstream_key``); an empty one raises ``keys.require``'s 503.
    """

    def open(self, req: ChatRequest, key: str) -> "UpstreamStream": ...


class UpstreamStream:
    """One model call: iterating it yields lists of canonical events; failures are raised as
    GatewayErrors, with the status and advice a client should see.

    :meth:`abort` may be called from any thread, at any time -- before the request is sent,
    while the reader is blocked on the socket, or after the end -- and stops the call at once.
    Subclasses keep it true by handing whatever must be closed to :meth:`_hold` as soon as they
    have it; that is the only place a race between the reader and ``abort`` is settled.
    """

    #: which route served the call, for the access log and metrics (``auto`` names the one
    #: it chose once it has)
    route_name = "-"

    def __init__(self):
        self._aborted = False
        self._close: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[list]:
        raise NotImplementedError

    def connect(self) -> None:
        """Send the request now and wait for the answer's headers, so its status is known (and
        raised) before anything is relayed; iterating connects too.  A stream whose request is
        only sent as it is read (the CLI's) does nothing here."""

    @property
    def aborted(self) -> bool:
        return self._aborted

    def abort(self) -> None:
        """Stop the call from any thread: wake a reader blocked on the socket, close it."""
        self._aborted = True
        close = self._close
        if close is not None:
            close()

    def _hold(self, close: Callable[[], None]) -> bool:
        """Make ``close`` what :meth:`abort` calls; False (and closed at once) when an abort
        came first, so the caller stops.  ``close`` must be safe to call twice."""
        self._close = close
        if self._aborted:
            close()
            return False
        return True
