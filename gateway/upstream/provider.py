"""The ``provider`` route: Command Code's official Provider API (upstream-protocol.md 11).

The format depends on the model, not on the client: Claude models are served only by
``/provider/v1/messages`` (Anthropic format), every other model by ``/provider/v1/chat/completions``
(OpenAI format).  So an OpenAI client asking for Claude and an Anthropic client asking for
DeepSeek both work: the canonical request is encoded for the model's endpoint and its stream
decoded back into canonical events, which the client's own codec then encodes.

It is a documented API, so only ordinary API headers are sent: none of the CLI's.
"""
from __future__ import annotations

import json

from .. import errors, keys, transport
from ..canonical import ChatRequest
from . import anthropic_wire, openai_wire

USER_AGENT = "command-code-gateway"


class NoProviderAccess(errors.PermissionDenied):
    """The key's plan has no Provider API (the Go plan answers ``403 upgrade_required``)."""

    default_code = "upgrade_required"


def is_claude(model_id: str) -> bool:
    return model_id.startswith("claude")


class ProviderRoute:
    """Sends canonical requests to the Provider API endpoint that serves their model."""

    def __init__(self, cfg: dict, transport_: transport.Transport):
        cc = cfg["commandcode"]
        self.api_key = cc["api_key"]
        self.chat_url = cc["base_url"] + openai_wire.PATH
        self.messages_url = cc["base_url"] + anthropic_wire.PATH
        self.transport = transport_
        self._chat_headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
                              "User-Agent": USER_AGENT}
        self._messages_headers = dict(self._chat_headers, **{"anthropic-version": "2023-06-01"})

    def open(self, req: ChatRequest, api_key: str | None = None) -> "ProviderStream":
        key = keys.require(api_key or self.api_key)
        if is_claude(req.model.id):
            url, wire, headers = self.messages_url, anthropic_wire, self._messages_headers
        else:
            url, wire, headers = self.chat_url, openai_wire, self._chat_headers
        body = json.dumps(wire.encode(req), ensure_ascii=False, separators=(",", ":")).encode()
        return ProviderStream(self.transport, url, dict(headers, Authorization=f"Bearer {key}"),
                              body, wire.Decoder)


class ProviderStream:
    """One Provider API call, iterated as lists of canonical events, one list per network read.

    :meth:`connect` sends the request and waits for the response headers, so a caller can
    learn the status (``auto`` needs it) before anything is relayed.
    """

    def __init__(self, transport_, url: str, headers: dict, body: bytes, decoder_cls):
        self._transport = transport_
        self._url = url
        self._headers = headers
        self._body = body
        self._decoder_cls = decoder_cls
        self._resp = None
        self._aborted = False

    def connect(self) -> None:
        if self._resp is not None:
            return
        try:
            self._resp = self._transport.post_stream(self._url, self._headers, self._body)
        except errors.PermissionDenied as err:
            if err.code != "upgrade_required":
                raise
            raise NoProviderAccess(
                "Command Code: this key's plan has no Provider API access (the Go plan answers "
                "403 upgrade_required). Set commandcode.mode to auto or cli in the gateway's "
                "config to use the CLI route, or upgrade the plan.") from None

    def __iter__(self):
        self.connect()
        if self._aborted:
            transport.abort(self._resp)
            return
        yield from transport.iter_events(self._resp, self._decoder_cls())

    def abort(self) -> None:
        self._aborted = True
        if self._resp is not None:
            transport.abort(self._resp)
