"""Service endpoints: ``/health`` for load balancers and ``/usage`` for the operator."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from .. import __version__, errors, keys, metrics, plans
from ..codecs import openai_chat
from . import error_handlers

bp = Blueprint("meta", __name__)
error_handlers.install(bp, openai_chat.error_body)     # /usage: OpenAI's, as /v1/models

#: What ``GET /`` lists: every endpoint, so a person or a probing client sees what is served.
ENDPOINTS = ["POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models",
             "GET /v1/models/{id}", "POST /v1/responses", "GET /v1/responses/{id}",
             "DELETE /v1/responses/{id}", "GET /v1/responses/{id}/input_items", "POST /v1/messages", "POST /v1/messages/count_tokens",
             "GET /health", "GET /usage", "GET /usage/recent", "GET /metrics",
             "GET /status"]


@bp.route("/", methods=["GET", "HEAD"])
def index():
    """Who answers here, without auth (Claude Code probes ``HEAD /`` before it starts)."""
    return jsonify({"name": "Command Code Gateway", "version": __version__,
                    "endpoints": ENDPOINTS})


@bp.get("/health")
def health():
    """Liveness, without auth: ``{"status": "ok"}``."""
    return jsonify({"status": "ok"})


@bp.get("/usage")
def usage():
    """Token totals since the usage file was created, and the Command Code quota left.

    Top level: ``total_requests``, ``failed_requests``, ``prompt_tokens``, ``completion_tokens``,
    ``cache_read_tokens``, ``cache_write_tokens``, ``reasoning_tokens``; the same counters under
    ``models[<id>]``, ``days[<YYYY-MM-DD>]`` and ``keys[<label>]`` (``gateway`` for the
    gateway's own key, ``key-<12 hex>`` for a caller's own key: a hash, never the key).

    ``upstream``: the plan, remaining credits (USD) and the five-hour and weekly windows of the
    key this request would use (the caller's own with ``client_keys: passthrough``), from
    Command Code's billing endpoint, cached a minute; ``{"error": ...}`` when it cannot be read.
    """
    gw = current_app.extensions["gateway"]
    data = gw.usage.read()
    key = gw.upstream_key(request.environ)
    if not key:
        data["upstream"] = {"error": "the gateway has no Command Code API key"}
    else:
        try:
            data["upstream"] = plans.quota(gw.account.credits(key))
        except errors.GatewayError as err:
            data["upstream"] = {"error": err.message}
    return jsonify(data)


@bp.get("/usage/recent")
def usage_recent():
    """The last 100 finished model calls and failed requests of every worker, newest first:
    ``{"data": [access line + "time" (epoch seconds), ...]}`` -- the access line's fields
    only, never a prompt or an answer.  The gateway's own key only: the lines name other
    callers' key labels and addresses, which a passthrough caller has no business seeing."""
    if request.environ.get(keys.KEY_LABEL) != keys.GATEWAY_LABEL:
        raise errors.PermissionDenied("/usage/recent needs the gateway's local key")
    gw = current_app.extensions["gateway"]
    return jsonify({"data": gw.recent.read()})


@bp.get("/metrics", endpoint="metrics")
def metrics_():
    """Prometheus metrics (text format), summed over every worker: requests by surface, model,
    route and status; tokens by kind; streams in flight and stream slots; time to first byte
    and duration; upstream errors by class; state-store errors (gateway/metrics.py).  Needs the
    local key, or ``metrics_key`` when one is set (so a scraper need not hold a model key)."""
    return Response(metrics.render(), mimetype=None,
                    headers={"Content-Type": metrics.CONTENT_TYPE})
