"""HTTP exchanges with Command Code in the gateway's terms: transport's calls, their neutral
failures classified (:func:`gateway.upstream.failures.from_transport`), bodies decoded.

Transport only moves bytes; what a refused connection, a silence or a ``403`` means to a client
is decided here and in :mod:`failures`, so every route (and the account lookups) says it the
same way.
"""
from __future__ import annotations

import requests

from .. import transport
from .base import Decoder
from .failures import from_transport


def post_stream(transport_: transport.Transport, url: str, headers: dict,
                body: bytes) -> requests.Response:
    """POST and return the open response once its headers arrived; raise the GatewayError for
    anything else (a non-2xx answer is classified from its body)."""
    try:
        return transport_.post_stream(url, headers, body)
    except transport.TransportError as exc:
        raise from_transport(exc) from None


def get_json(transport_: transport.Transport, url: str, headers: dict, timeout: float = 10.0):
    """GET a small JSON document (account and model-list endpoints); raise the GatewayError for
    anything else."""
    try:
        return transport_.get_json(url, headers, timeout=timeout)
    except transport.TransportError as exc:
        raise from_transport(exc) from None


def iter_events(resp: requests.Response, decoder: Decoder):
    """Lists of canonical events from ``resp``'s body through ``decoder``, one list per network
    read that completed an event; the response is closed after.

    After the final event the body is still read to its end, so the connection goes back to
    the pool instead of being dropped.
    """
    try:
        for chunk in transport.iter_chunks(resp):
            events = decoder.feed(chunk)
            if events:
                yield events
        if not decoder.done:
            events = decoder.end()
            if events:
                yield events
    except transport.TransportError as exc:     # only reading raises it: decoders raise ours
        raise from_transport(exc, reading=True) from None
    finally:
        resp.close()
