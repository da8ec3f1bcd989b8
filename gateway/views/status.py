"""``/status``: the status page for a person with a browser, behind its own login.

A browser cannot send ``Authorization: Bearer``, so the page does its own auth (its endpoints
are in ``_PUBLIC_ENDPOINTS``): the local key is posted once in a form body -- never in a URL,
where it would reach history and proxy logs -- and exchanged for a session cookie that holds
only an expiry and its HMAC.  The HMAC's secret is derived from the local keys, so every
worker (and every instance with the same keys) accepts the cookie without shared state, and
changing the key logs every browser out.  ``status_public: true`` shows the page without login,
for a gateway on a private network.
"""
from __future__ import annotations

import hashlib
import hmac
import time

from flask import Blueprint, Response, current_app, redirect, request

from .. import status_page

bp = Blueprint("status", __name__)

COOKIE = "ccgw_status"
SESSION_SECONDS = 12 * 3600
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _secret(gw) -> bytes:
    """The cookie's HMAC key: the local keys, hashed under a purpose label (so the secret is
    never a key itself and a cookie says nothing about the key)."""
    return hmac.new(b"ccgw status session v1", b"\0".join(sorted(gw.local_keys)),
                    hashlib.sha256).digest()


def _sign(gw, expiry: int) -> str:
    return hmac.new(_secret(gw), str(expiry).encode(), hashlib.sha256).hexdigest()


def session_value(gw, now: float | None = None) -> str:
    expiry = int((time.time() if now is None else now) + SESSION_SECONDS)
    return f"{expiry}.{_sign(gw, expiry)}"


def valid_session(gw, value: str | None, now: float | None = None) -> bool:
    """Whether ``value`` is a cookie this gateway signed and that has not expired."""
    expiry, _, mac = (value or "").partition(".")
    if not expiry.isdigit() or not gw.local_keys:
        return False
    if int(expiry) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac, _sign(gw, int(expiry)))


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html")


@bp.after_request
def _harden(resp: Response) -> Response:
    """Every /status answer: not cached, no script or foreign load, not framed, no referrer."""
    resp.headers.update(HEADERS)
    return resp


@bp.get("/status", endpoint="page")
def page():
    gw = current_app.extensions["gateway"]
    public = gw.config.status_public
    if not public and not valid_session(gw, request.cookies.get(COOKIE)):
        return _html(status_page.login())
    return _html(status_page.page(status_page.collect(gw), logout=not public))


@bp.post("/status/login", endpoint="login")
def login():
    gw = current_app.extensions["gateway"]
    if not gw.authorized(request.form.get("key")):
        return _html(status_page.login("That is not the gateway's local key."), 401)
    resp = redirect("/status", code=303)
    resp.set_cookie(COOKIE, session_value(gw), max_age=SESSION_SECONDS, path="/status",
                    secure=request.scheme == "https", httponly=True, samesite="Strict")
    return resp


@bp.post("/status/logout", endpoint="logout")
def logout():
    resp = redirect("/status", code=303)
    resp.delete_cookie(COOKIE, path="/status", secure=request.scheme == "https", httponly=True,
                       samesite="Strict")
    return resp
