"""The Anthropic surface: ``/v1/messages`` and ``/v1/messages/count_tokens`` (Claude Code and the
Anthropic SDKs).  Any ``anthropic-version`` and ``anthropic-beta`` header is accepted; errors use
the Anthropic envelope."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from .. import chat, tokens
from ..codecs import anthropic_messages
from ..normalize import normalize
from .common import json_body

bp = Blueprint("anthropic", __name__)


@bp.post("/v1/messages")
def messages():
    """Messages, streamed (SSE events with ``event:`` lines) or not (a ``message`` object).

    ``?beta=true`` (sent by Claude Code) changes nothing.  The response names the model the
    client asked for, even when ``model_map`` sent another one upstream.
    """
    gw = current_app.extensions["gateway"]
    req = anthropic_messages.decode(json_body(), gw.catalog, gw.images)
    if req.stream:
        encoder = anthropic_messages.EventEncoder(req.requested_model)
        return chat.stream_response(gw, req, encoder, request.environ)
    events = chat.collect(gw, req, request.environ)
    return jsonify(anthropic_messages.message(events, req.requested_model))


@bp.post("/v1/messages/count_tokens")
def count_tokens():
    """``{"input_tokens": N}``: an estimate of system, messages, tools and images, made locally
    (Command Code has no counting endpoint; see gateway/tokens.py for how it estimates).

    Clients call it to size their context, so it answers every well-formed body: any model id,
    images whatever the model, a history without a user turn; it never calls upstream and never
    fetches an image URL."""
    gw = current_app.extensions["gateway"]
    req = anthropic_messages.decode_for_count(json_body(), gw.catalog)
    return jsonify({"input_tokens": tokens.estimate(normalize(req, sendable=False))})
