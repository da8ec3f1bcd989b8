"""One model call, whatever the client's surface: normalise, send, gate, relay, count.

The blueprints decode and encode; this module owns what happens in between, the same for every
surface:

* the first upstream event decides the HTTP status: if upstream fails before any output the
  client gets a real error status (so its SDK can retry or report it), never a 200 with an
  empty answer; the wait for that first event lasts at most one keep-alive interval;
* after that, events are relayed one by one as they arrive, a failure becomes the codec's
  in-stream error, and a stream that stops short is never dressed up as a finished answer;
* the usage store is updated exactly once per call, at its end.
"""
from __future__ import annotations

import itertools
import logging

from flask import Response, stream_with_context

from . import errors, keys, relay
from .canonical import ChatRequest, Finish
from .normalize import normalize

log = logging.getLogger("gateway.chat")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _record(gw, req: ChatRequest, usage, failed: bool, environ: dict) -> None:
    try:
        gw.usage.record(req.model.id, usage, failed, environ.get(keys.KEY_LABEL))
    except Exception:       # counting must never break an answer that was already given
        log.exception("could not update the usage file %s", gw.usage.path)


def open_events(gw, req: ChatRequest, environ: dict):
    """Send ``req`` upstream and wait for its first event; raise if upstream fails first.

    Returns an iterator of canonical events (and :data:`relay.HEARTBEAT` markers).
    """
    normalize(req)
    slot = gw.slots.take()          # AtCapacity (503) at once when this worker is full
    opened = False
    try:
        stream = gw.route.open(req, environ.get(keys.UPSTREAM_KEY))
        events = relay.pump(stream, gw.keepalive_interval, relay.client_gone_checker(environ))
        first = next(events)
        opened = True
    except StopIteration:
        _record(gw, req, None, True, environ)
        raise errors.UpstreamError("Command Code closed the stream without answering") from None
    except errors.GatewayError:
        _record(gw, req, None, True, environ)
        raise
    finally:
        if not opened:
            slot.release()
    return itertools.chain((first,), events), events, slot


def stream_response(gw, req: ChatRequest, encoder, environ: dict) -> Response:
    """An SSE response relaying ``req``'s events through ``encoder`` as they arrive."""
    events, source, slot = open_events(gw, req, environ)

    def generate():
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
            yield encoder.error(err)
        except Exception:
            log.exception("relaying a stream failed")
            yield encoder.error(errors.UpstreamError("the gateway failed while relaying the "
                                                     "stream", code="gateway_error"))
        finally:
            source.close()      # stops the reader (and upstream) if the client left early
            slot.release()
            if not recorded:
                _record(gw, req, None, True, environ)

    resp = Response(stream_with_context(generate()), mimetype="text/event-stream",
                    headers=SSE_HEADERS)
    resp.call_on_close(slot.release)        # also when the body is never iterated
    return resp


def collect(gw, req: ChatRequest, environ: dict) -> list:
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
    finally:
        source.close()
        slot.release()
        _record(gw, req, usage, failed, environ)
    raise errors.UpstreamError("the client went away before the answer was complete")
