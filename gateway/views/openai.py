"""The OpenAI surface: ``/v1/chat/completions``, legacy ``/v1/completions`` and ``/v1/models``."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from .. import chat
from ..catalog import require
from ..codecs import openai_chat, openai_completions
from . import error_handlers
from .common import json_body
from .streaming import stream_response

bp = Blueprint("openai", __name__)
error_handlers.install(bp, openai_chat.error_body)


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
        return stream_response(gw, req, encoder, request.environ)
    events = chat.collect(gw, req, request.environ)
    return jsonify(openai_chat.completion(events, req.model.id))


@bp.post("/v1/completions")
@bp.post("/completions")
def completions():
    """Legacy Completions, streamed (SSE ``text_completion`` chunks) or not.

    ``/completions`` too, because some clients drop the ``/v1`` of a configured base URL.  The
    prompt is sent as one user message; what the codec accepts, ignores and refuses is in
    :mod:`gateway.codecs.openai_completions`.  Errors as on chat: the OpenAI envelope with the
    matching status before the stream starts, an error chunk after.
    """
    gw = current_app.extensions["gateway"]
    req = openai_completions.decode(json_body(), gw.catalog)
    if req.stream:
        encoder = openai_completions.ChunkEncoder(req.model.id, gw.keepalive_interval)
        return stream_response(gw, req, encoder, request.environ)
    events = chat.collect(gw, req, request.environ)
    return jsonify(openai_completions.completion(events, req.model.id))


@bp.get("/v1/models")
def list_models():
    """The models this gateway serves, twice: ``data`` for OpenAI clients, each entry with
    ``context_length``, ``max_output_tokens``, ``vision``, ``reasoning_efforts`` and
    ``min_plan``; and ``models`` for Codex CLI, which reads its model metadata (``ModelInfo``:
    context window, reasoning levels, image input...) from the same response and otherwise
    falls back to defaults that send no reasoning effort and assume no context window.

    The shipped catalog, merged with the Provider API's list once a worker has fetched it,
    less ``exclude_models``; with ``plan: auto`` (or a plan named in the config) less the models
    the caller's plan cannot use, unless ``include_models`` names them.  Both lists hold the
    same models; both are built once per catalog, so a request only filters.
    """
    gw = current_app.extensions["gateway"]
    data = gw.listed_models(gw.upstream_key(request.environ))
    codex = gw.codex_models
    # a model the catalog gained or lost between the two reads is left out of ``models`` for
    # this one request rather than failing it
    models = [codex[entry["id"]] for entry in data if entry["id"] in codex]
    return jsonify({"object": "list", "data": data, "models": models})


@bp.get("/v1/models/<path:model_id>")
def get_model(model_id: str):
    """One model by id; short, case-insensitive and dated ids resolve; unknown ones are a 404."""
    gw = current_app.extensions["gateway"]
    return jsonify(require(gw.catalog, model_id, param="model").as_openai())

