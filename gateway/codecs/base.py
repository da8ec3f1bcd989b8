"""What a client codec offers, as ``typing.Protocol``\\ s: the seam between a surface and the call.

A client codec is one module per wire format (``openai_chat``, ``openai_completions``,
``anthropic_messages``, ``openai_responses``).  Around the canonical model it offers three things,
and :mod:`gateway.chat` and the blueprints rely on nothing else:

* a **decoder**, request body -> :class:`~gateway.canonical.ChatRequest` (:class:`Decode`), which
  raises :class:`~gateway.errors.InvalidRequest` naming the field that is wrong;
* an **event encoder** (:class:`EventEncoder`), canonical events -> the bytes of the client's
  stream, with the client's own keep-alive and in-stream error event;
* an **error envelope** (:class:`ErrorBody`), a :class:`~gateway.errors.GatewayError` -> the JSON
  body of an error response; the blueprint's error handler sends it with the error's status.

Nothing here is Flask's or a route's: a new surface is a new module satisfying these, and can be
tested with plain calls.
"""
from __future__ import annotations

from typing import Any, Protocol

from ..canonical import ChatRequest, Event, Image
from ..catalog import Catalog
from ..errors import GatewayError


class Images(Protocol):
    """Where a decoder gets the images a request refers to (:class:`gateway.images.RemoteImages`
    fetches and inlines remote URLs; ``count_tokens`` reads inline ones only)."""

    def load(self, url: str, param: str) -> Image:
        """The image at ``url`` (a ``data:`` URL or a remote one); ``param`` names the field in
        the 400 when it cannot be used."""


class Decode(Protocol):
    """``decode(body, catalog, images)``: a parsed request body as a canonical request.

    Nothing is normalised yet (:func:`gateway.normalize.normalize` does that for every surface
    alike).  The Responses codec's ``decode`` takes more (the stored conversation it continues)
    and returns its :class:`~gateway.codecs.openai_responses.Turn` beside the request.
    """

    def __call__(self, body: Any, catalog: Catalog, images: Images, /) -> ChatRequest: ...


class ErrorBody(Protocol):
    """``error_body(err)``: the JSON body a client of this surface expects for ``err``."""

    def __call__(self, err: GatewayError, /) -> dict: ...


class EventEncoder(Protocol):
    """Canonical events -> the client's stream, as UTF-8 bytes, one stream per instance.

    ``event`` may return ``b""`` (an event this surface does not show).  The stream's end -- the
    finish chunk, usage and ``[DONE]``, or ``message_stop``, or ``response.completed`` -- is what
    ``event`` returns for :class:`~gateway.canonical.Finish`: only a finished answer is ever
    closed as done; one that stops short ends with :meth:`error` instead.
    """

    def event(self, ev: Event) -> bytes:
        """The bytes for one canonical event."""

    def heartbeat(self) -> bytes:
        """What to send during an upstream silence so that proxies and clients keep waiting."""

    def error(self, err: GatewayError) -> bytes:
        """The last bytes of a stream that failed after it started (the status is already 200)."""


class ClientCodec(Protocol):
    """A codec module: ``openai_chat`` and ``anthropic_messages`` satisfy it as modules do."""

    decode: Decode
    error_body: ErrorBody
