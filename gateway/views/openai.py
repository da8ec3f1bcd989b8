"""The OpenAI surface: ``/v1/chat/completions`` and ``/v1/models``."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from .. import chat
from ..catalog import require
from ..codecs import openai_chat
from .common import json_body

bp = Blueprint("openai", __name__)


@bp.post("/v1/chat/completions")
def chat_completions():
    """Chat Completions, streamed (SSE ``chat.completion.chunk``) or not (``chat.completion``).

    Any catalog model; the final chunk of a stream carries ``usage``.  Errors use the OpenAI
    envelope with the matching status, before the stream starts; after, an error chunk.
    """
    gw = current_app.extensions["gateway"]
    req = openai_chat.decode(json_body(), gw.catalog, gw.images)
    if req.stream:
        encoder = openai_chat.ChunkEncoder(req.model.id)
        return chat.stream_response(gw, req, encoder, request.environ)
    events = chat.collect(gw, req, request.environ)
    return jsonify(openai_chat.completion(events, req.model.id))


@bp.get("/v1/models")
def list_models():
    """The models this gateway serves, each with ``context_length``, ``max_output_tokens``,
    ``vision``, ``reasoning_efforts`` and ``min_plan``.

    The shipped catalog, merged with the Provider API's list once a worker has fetched it,
    less ``exclude_models``; with ``plan: auto`` (or a plan named in the config) less the models
    the caller's plan cannot use, unless ``include_models`` names them.
    """
    gw = current_app.extensions["gateway"]
    data = gw.listed_models(gw.upstream_key(request.environ))
    return jsonify({"object": "list", "data": data})


@bp.get("/v1/models/<path:model_id>")
def get_model(model_id: str):
    """One model by id; short, case-insensitive and dated ids resolve; unknown ones are a 404."""
    gw = current_app.extensions["gateway"]
    return jsonify(require(gw.catalog, model_id, param="model").as_openai())

