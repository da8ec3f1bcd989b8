"""The ``provider`` route: Command Code's official Provider API (docs/protocol.md §11).

The format depends on the model, not on the client: Claude models are served only by
``/provider/v1/messages`` (Anthropic format), every other model by ``/provider/v1/chat/completions``
(OpenAI format).  So an OpenAI client asking for Claude and an Anthropic client asking for
DeepSeek both work: the canonical request is encoded for the model's endpoint and its stream
decoded back into canonical events, which the client's own codec then encodes.

It is a documented API, so only ordinary API headers are sent: none of the CLI's.
"""
from __future__ import annotations

import functools

from .. import errors, keys, transport
from ..canonical import ChatRequest
from . import anthropic_wire, failures, openai_wire, wire
from .base import UpstreamStream
from .exchange import iter_events, post_stream

USER_AGENT = "command-code-gateway"


def is_claude(model_id: str) -> bool:
    return model_id.startswith("claude")


class ProviderRoute:
    """Sends canonical requests to the Provider API endpoint that serves their model."""

    def __init__(self, transport_: transport.Transport, base_url: str):
        self.chat_url = base_url + openai_wire.PATH
        self.messages_url = base_url + anthropic_wire.PATH
        self.transport = transport_
        self._chat_headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
                              "User-Agent": USER_AGENT}
        self._messages_headers = dict(self._chat_headers, **{"anthropic-version": "2023-06-01"})

    def open(self, req: ChatRequest, key: str) -> "ProviderStream":
        key = keys.require(key)
        if is_claude(req.model.id):
            url, codec, headers = self.messages_url, anthropic_wire, self._messages_headers
        else:
            url, codec, headers = self.chat_url, openai_wire, self._chat_headers
        return ProviderStream(self.transport, url, dict(headers, Authorization=f"Bearer {key}"),
                              wire.body(codec.encode(req)), codec.Decoder)


class ProviderStream(UpstreamStream):
    """One Provider API call, iterated as lists of canonical events, one list per network read.

    :meth:`connect` sends the request and waits for the response headers, so a caller can
    learn the status (``auto`` needs it) before anything is relayed.
    """

    route_name = "provider"

    def __init__(self, transport_, url: str, headers: dict, body: bytes, decoder_cls):
        super().__init__()
        self._transport = transport_
        self._url = url
        self._headers = headers
        self._body = body
        self._decoder_cls = decoder_cls
        self._resp = None

    def connect(self) -> None:
        if self._resp is not None:
            return
        try:
            self._resp = post_stream(self._transport, self._url, self._headers, self._body)
        except errors.PermissionDenied as err:
            raise failures.no_provider_access(err) from None
        self._hold(functools.partial(transport.abort, self._resp))

    def __iter__(self):
        self.connect()
        if self.aborted:
            return
        yield from iter_events(self._resp, self._decoder_cls())
