"""One model call, whatever the client's surface: normalise, send, gate, relay, count.

The blueprints decode and encode; this module owns what happens in between, the same for every
surface:

* the first upstream event decides the HTTP status: if upstream fails before any output the
  client gets a real error status (so its SDK can retry or report it), never a 200 with an
  empty answer; the wait for that first event lasts at most one keep-alive interval;
* after that, events are relayed one by one as they arrive, a failure becomes the codec's
  in-stream error, and a stream that stops short is never dressed up as a finished answer;
* the usage store is updated exactly once per call, at its end.

It knows nothing of HTTP frameworks: :func:`stream` hands back the encoded bytes and what to
call if they are never read, and :mod:`gateway.views.streaming` wraps them in a response.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from . import access, errors, keys, relay
from .canonical import ChatRequest, Finish, Usage
from .codecs.base import EventEncoder
from .normalize import normalize
from .upstream.base import Route

if TYPE_CHECKING:
    from .capacity import Slots
    from .usage import UsageStore

log = logging.getLogger("gateway.chat")


class Gateway(Protocol):
    """What a call uses of the gateway (:class:`gateway.Gateway` is the one implementation;
    a test can pass any object with these)."""

    route: Route
    keepalive_interval: float
    usage: UsageStore
    slots: Slots

    def upstream_key(self, environ: dict) -> str | None: ...


def _record(gw: Gateway, req: ChatRequest, usage: Usage | None, failed: bool,
            environ: dict) -> None:
    rec = access.record(environ)
    rec["usage"] = usage
    # the error code, when the call failed, was set on the record just before (the daily
    # error counts); a call that ended well counts no error whatever the record says
    error = rec.get("error") if failed else None
    try:
        gw.usage.record(req.model.id, usage, failed, environ.get(keys.KEY_LABEL), error=error)
    except Exception:       # counting must never break an answer that was already given
        log.exception("could not update the usage file %s", gw.usage.path)


def open_events(gw: Gateway, req: ChatRequest, environ: dict):
    """Send ``req`` upstream and wait for its first event; raise if upstream fails first.

    Returns ``(events, source, slot)``: an iterator of canonical events (and
    :data:`relay.HEARTBEAT` markers), the pump to ``close()`` when done, and the stream slot
    taken for the call, to ``release()``.
    """
    normalize(req)
    slot = gw.slots.take()          # AtCapacity (503) at once when this worker is full
    opened = False
    try:
        upstream = gw.route.open(req, gw.upstream_key(environ))
        rec = access.record(environ)
        rec["model"], rec["upstream"] = req.model.id, upstream     # for the access line
        events = relay.pump(upstream, gw.keepalive_interval, relay.client_gone_checker(environ))
        first = next(events)
        opened = True
    except StopIteration:
        err = errors.UpstreamError("Command Code closed the stream without answering")
        access.record(environ)["error"] = err.code      # before _record: it counts the code
        _record(gw, req, None, True, environ)
        raise err from None
    except errors.GatewayError as err:
        access.record(environ)["error"] = err.code
        _record(gw, req, None, True, environ)
        raise
    finally:
        if not opened:
            slot.release()
    return itertools.chain((first,), events), events, slot


def stream(gw: Gateway, req: ChatRequest, encoder: EventEncoder,
           environ: dict) -> tuple[Iterator[bytes], Callable[[], None]]:
    """``req``'s answer as the bytes ``encoder`` makes of its events, as they arrive.

    Upstream is opened (and its first event awaited) now, so a failure before any output is
    raised here, before a status is sent.  Returns the body and ``release``, to call when the
    response is closed: it frees the stream slot even if the body is never iterated.
    """
    events, source, slot = open_events(gw, req, environ)
    return encoded(gw, req, encoder, environ, events, source, slot), slot.release


def encoded(gw: Gateway, req: ChatRequest, encoder: EventEncoder, environ: dict,
            events, source, slot) -> Iterator[bytes]:
    """Relay ``events`` through ``encoder``: each event's bytes, a keep-alive for each
    heartbeat, the codec's error event on any failure; counted once, closed and freed at the
    end whatever happens (``source`` and ``slot`` as :func:`open_events` returns them)."""
    recorded = False
    try:
        for ev in events:
            if ev is relay.HEARTBEAT:
                yield encoder.heartbeat()
                continue
            if type(ev) is Finish:
                # counted before the last bytes go out, so /usage is current once the client
                # has its answer
                recorded = True
                _record(gw, req, ev.usage, False, environ)
                yield encoder.event(ev)
                return
            yield encoder.event(ev)
    except errors.GatewayError as err:
        access.record(environ)["error"] = err.code
        yield encoder.error(err)
    except Exception:
        log.exception("relaying a stream failed")
        access.record(environ)["error"] = "gateway_error"
        yield encoder.error(errors.UpstreamError("the gateway failed while relaying the "
                                                 "stream", code="gateway_error"))
    finally:
        source.close()      # stops the reader (and upstream) if the client left early
        slot.release()
        if not recorded:
            rec = access.record(environ)
            if not rec.get("error"):        # no failure of ours or upstream's: the client left
                rec["error"] = "client_disconnected"
            _record(gw, req, None, True, environ)


def collect(gw: Gateway, req: ChatRequest, environ: dict) -> list:
    """Every event of ``req``'s answer, for a non-streamed response; raise on any failure."""
    events, source, slot = open_events(gw, req, environ)
    out, usage, failed = [], None, True
    try:
        for ev in events:
            if ev is relay.HEARTBEAT:
                continue
            out.append(ev)
            if type(ev) is Finish:
                usage, failed = ev.usage, False
                return out
        raise errors.UpstreamError("the client went away before the answer was complete")
    except errors.GatewayError as err:
        access.record(environ)["error"] = err.code      # before _record (finally) counts it
        raise
    finally:
        source.close()
        slot.release()
        _record(gw, req, usage, failed, environ)
