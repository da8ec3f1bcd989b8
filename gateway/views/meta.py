"""Service endpoints: ``/health`` for load balancers and ``/usage`` for the operator."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health():
    """Liveness, without auth: ``{"status": "ok"}``."""
    return jsonify({"status": "ok"})


@bp.get("/usage")
def usage():
    """Token totals since the usage file was created: overall, per model and per UTC day.

    Top level: ``total_requests``, ``failed_requests``, ``prompt_tokens``, ``completion_tokens``,
    ``cache_read_tokens``, ``cache_write_tokens``, ``reasoning_tokens``; the same counters under
    ``models[<id>]`` and ``days[<YYYY-MM-DD>]``.  Holds no keys.
    """
    return jsonify(current_app.extensions["gateway"].usage.read())
