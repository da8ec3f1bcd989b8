"""The OpenAI Responses surface: ``/v1/responses`` (also ``/responses``: some clients drop the
``/v1``) for Codex, the openai Agents SDK and every client whose default is the Responses API;
and the stored responses behind ``previous_response_id`` (``GET``/``DELETE`` by id, its
``input_items``).  Errors use the OpenAI envelope, with Codex's ``usage_limit_reached``."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from .. import chat, errors
from ..codecs import openai_responses
from . import error_handlers
from .common import json_body
from .streaming import stream_response

bp = Blueprint("responses", __name__)
error_handlers.install(bp, openai_responses.error_body)


def _stored(gw, response_id: str, param: str | None = None) -> dict:
    entry = gw.conversations.get(response_id) if gw.conversations is not None else None
    if entry is None:
        why = ("this gateway does not store responses (store_responses: false)"
               if gw.conversations is None else
               "it is unknown, expired, deleted, or was created with store: false")
        raise errors.NotFound(f"No stored response '{response_id}': {why}. Send the whole "
                              "conversation in 'input' instead.", param=param,
                              code="previous_response_not_found" if param else "response_not_found")
    return entry


@bp.post("/v1/responses")
@bp.post("/responses")
def create():
    """A response, streamed (Responses SSE events) or not (a ``response`` object).

    With ``store`` (default true) the response is stored before ``response.completed`` is sent,
    so a client can continue it at once with ``previous_response_id``, from any worker.
    """
    gw = current_app.extensions["gateway"]
    body = json_body()
    previous = None
    if isinstance(body, dict) and body.get("previous_response_id") is not None:
        pid = body["previous_response_id"]
        if not isinstance(pid, str) or not pid:
            raise errors.InvalidRequest("'previous_response_id' must be a response id",
                                        param="previous_response_id")
        previous = _stored(gw, pid, "previous_response_id")
    store = gw.conversations
    req, turn = openai_responses.decode(body, gw.catalog, gw.images, previous,
                                        store_default=store is not None,
                                        find_item=store.get_item if store is not None else None)
    on_done = None
    if turn.store and gw.conversations is not None:
        def on_done(response: dict) -> None:
            try:
                gw.conversations.put(response, turn.input_items, turn.own_from)
            except Exception:       # the answer still goes out; a later continuation gets a 404
                current_app.logger.exception("could not store response %s", response["id"])
    if req.stream:
        encoder = openai_responses.ResponseEncoder(turn, on_done)
        return stream_response(gw, req, encoder, request.environ)
    events = chat.collect(gw, req, request.environ)
    return jsonify(openai_responses.response(events, turn, on_done))


@bp.get("/v1/responses/<response_id>")
@bp.get("/responses/<response_id>")
def retrieve(response_id: str):
    """A stored response; its reasoning's ``encrypted_content`` only with
    ``include=reasoning.encrypted_content`` (or ``include[]=``), as OpenAI does."""
    gw = current_app.extensions["gateway"]
    entry = _stored(gw, response_id)
    include = request.args.getlist("include") + request.args.getlist("include[]")
    shown = openai_responses.INCLUDE_ENCRYPTED in include
    resp = dict(entry["response"])
    resp["output"] = [openai_responses.public(i, shown) for i in resp["output"]]
    return jsonify(resp)


@bp.delete("/v1/responses/<response_id>")
@bp.delete("/responses/<response_id>")
def delete(response_id: str):
    gw = current_app.extensions["gateway"]
    if gw.conversations is None or not gw.conversations.delete(response_id):
        _stored(gw, response_id)        # raises the 404 that explains why
    return jsonify({"id": response_id, "object": "response", "deleted": True})


@bp.get("/v1/responses/<response_id>/input_items")
@bp.get("/responses/<response_id>/input_items")
def input_items(response_id: str):
    """The input items of a stored response (``order`` desc by default, ``limit``, ``after``)."""
    gw = current_app.extensions["gateway"]
    entry = _stored(gw, response_id)
    items = entry["input"][entry.get("own_from", 0):]
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise errors.InvalidRequest("'order' must be asc or desc", param="order")
    if order == "desc":
        items = items[::-1]
    after = request.args.get("after")
    if after:
        ids = [i.get("id") for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = int(request.args.get("limit", 20))
    except ValueError:
        raise errors.InvalidRequest("'limit' must be an integer from 1 to 100", param="limit") from None
    if not 1 <= limit <= 100:
        raise errors.InvalidRequest("'limit' must be an integer from 1 to 100", param="limit")
    page = items[:limit]
    return jsonify({"object": "list", "data": page,
                    "first_id": page[0].get("id") if page else None,
                    "last_id": page[-1].get("id") if page else None,
                    "has_more": len(items) > limit})
