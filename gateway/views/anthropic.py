"""The Anthropic surface: ``/v1/messages`` and ``/v1/messages/count_tokens`` (Claude Code and the
Anthropic SDKs).  Any ``anthropic-version`` and ``anthropic-beta`` header is accepted; errors use
the Anthropic envelope."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from .. import chat, errors, tokens
from ..codecs import anthropic_messages
from ..normalize import normalize
from . import error_handlers
from .common import json_body
from .streaming import stream_response

bp = Blueprint("anthropic", __name__)
error_handlers.install(bp, anthropic_messages.error_body)

_UNSUPPORTED = {"error_code": "thread_unsupported_request", "unsupported": ["thread"]}


def _threaded(gw, body):
    """``(body, thread)``: a request carrying ``thread`` (beta ``message-threads-2026-08-12``,
    the SDKs' tool runners) continued from the store, and the conversation to store after it.

    ``{type: "create"}`` starts a thread; ``{type: "continue", previous_message_id}`` sends
    only the new turn, and the stored conversation up to that message (with its system prompt
    and tools, which the SDK leaves out) goes in front.  An id the store does not hold is 404
    ``thread_not_found`` (the SDKs then replay the whole history in a new thread); with storage
    off, any ``thread`` is 400 ``thread_unsupported_request`` before anything is sent upstream
    (the SDKs then carry on without threads).  ``error.details.error_code`` is what they read.
    """
    thread = body.get("thread") if isinstance(body, dict) else None
    if thread is None:
        return body, None
    if gw.conversations is None:
        raise errors.InvalidRequest("this gateway keeps no message threads (store_responses: "
                                    "false): send the whole conversation without 'thread'",
                                    param="thread", details=_UNSUPPORTED)
    base = _thread_base(gw, thread)
    merged = {k: v for k, v in body.items() if k != "thread"}
    new = body.get("messages")
    merged["messages"] = base["messages"] + (new if isinstance(new, list) else [])
    for key in ("system", "tools"):
        if key not in body and base.get(key) is not None:
            merged[key] = base[key]
    return merged, {k: merged.get(k) for k in ("messages", "system", "tools")}


def _thread_base(gw, thread) -> dict:
    """The stored conversation a ``thread`` continues (an empty one for ``create``)."""
    kind = thread.get("type") if isinstance(thread, dict) else None
    if kind == "create":
        return {"messages": []}
    if kind != "continue":
        raise errors.InvalidRequest("'thread.type' must be \"create\" or \"continue\"",
                                    param="thread.type", details=_UNSUPPORTED)
    pid = thread.get("previous_message_id")
    base = gw.conversations.get_thread(pid) if isinstance(pid, str) and pid else None
    if base is None:
        raise errors.NotFound(f"No stored thread ends at message '{pid}' (unknown or "
                              "expired): start a new thread with the whole conversation",
                              param="thread.previous_message_id", code="thread_not_found",
                              details={"error_code": "thread_not_found"})
    return base


def _saver(gw, thread):
    """Stores the thread under the reply's id once the reply is complete (None: no thread)."""
    if thread is None:
        return None

    def save(reply: dict) -> None:
        entry = {**thread, "messages": thread["messages"] + [
            {"role": "assistant", "content": reply["content"]}]}
        try:
            gw.conversations.put_thread(reply["id"], entry)
        except Exception:       # the answer still goes out; continuing it gets thread_not_found
            current_app.logger.exception("could not store thread message %s", reply["id"])
    return save


@bp.post("/v1/messages")
def messages():
    """Messages, streamed (SSE events with ``event:`` lines) or not (a ``message`` object).

    ``?beta=true`` (sent by Claude Code) changes nothing.  The response names the model the
    client asked for, even when ``model_map`` sent another one upstream.
    """
    gw = current_app.extensions["gateway"]
    body, thread = _threaded(gw, json_body())
    req = anthropic_messages.decode(body, gw.catalog, gw.images)
    save = _saver(gw, thread)
    if req.stream:
        encoder = anthropic_messages.EventEncoder(req.requested_model, on_done=save)
        return stream_response(gw, req, encoder, request.environ)
    events = chat.collect(gw, req, request.environ)
    reply = anthropic_messages.message(events, req.requested_model)
    if save is not None:
        save(reply)
    return jsonify(reply)


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
