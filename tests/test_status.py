"""``/status`` with the Flask test client: its own login (form, signed cookie and its flags,
wrong key 401, logout, expiry), the headers every answer carries, ``status_public``, that the
key never appears in a URL or a page, and what the page makes of a known snapshot."""
from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest

from gateway import create_app, status_page
from gateway.views import status as status_view
from tests.conftest import LOCAL_KEY, UPSTREAM_KEY, gateway_config

PAGE = "<h2>Health</h2>"                 # only the page behind the login has it
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def hardened(resp) -> None:
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


def no_key(resp) -> None:
    text = resp.get_data(as_text=True)
    for secret in (LOCAL_KEY, UPSTREAM_KEY):
        assert secret not in text and secret not in resp.headers.get("Location", "")
        assert secret not in resp.headers.get("Set-Cookie", "")


@pytest.fixture
def browser(app):
    """A test client with no Authorization header: a browser."""
    return app.test_client()


def login(browser, key=LOCAL_KEY, **kw):
    return browser.post("/status/login", data={"key": key}, **kw)


def test_without_a_session_the_page_is_a_login_form_that_posts_the_key(browser):
    resp = browser.get("/status")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    hardened(resp)
    html = resp.get_data(as_text=True)
    form = re.search(r'<form class="login card" method="post" action="/status/login">', html)
    assert form and 'name="key" type="password"' in html
    assert PAGE not in html and "Quota" not in html


def test_login_sets_a_strict_signed_cookie_and_redirects_to_the_page(browser):
    resp = login(browser)
    assert resp.status_code == 303 and resp.headers["Location"] == "/status"
    hardened(resp)
    no_key(resp)
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(status_view.COOKIE + "=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/status"):
        assert flag in cookie
    assert "Secure" not in cookie                          # plain http: a browser would drop it
    page = browser.get("/status")
    assert page.status_code == 200 and PAGE in page.get_data(as_text=True)
    hardened(page)
    no_key(page)


def test_over_https_the_cookie_is_secure(browser):
    resp = login(browser, base_url="https://localhost")
    assert "Secure" in resp.headers["Set-Cookie"]


@pytest.mark.parametrize("key", ["wrong-key", "", UPSTREAM_KEY])
def test_a_wrong_key_gets_the_form_again_with_401_and_no_cookie(browser, key):
    resp = login(browser, key)
    assert resp.status_code == 401 and "Set-Cookie" not in resp.headers
    hardened(resp)
    assert 'id="login-error"' in resp.get_data(as_text=True)
    no_key(resp)
    assert PAGE not in browser.get("/status").get_data(as_text=True)


def test_the_key_is_not_accepted_in_the_url(browser):
    resp = browser.post(f"/status/login?key={LOCAL_KEY}")
    assert resp.status_code == 401
    assert browser.get(f"/status?key={LOCAL_KEY}").get_data(as_text=True).count(PAGE) == 0


def test_logout_clears_the_cookie(browser):
    login(browser)
    resp = browser.post("/status/logout")
    assert resp.status_code == 303 and resp.headers["Location"] == "/status"
    hardened(resp)
    assert "Max-Age=0" in resp.headers["Set-Cookie"] or "Expires=Thu, 01 Jan 1970" in \
        resp.headers["Set-Cookie"]
    assert PAGE not in browser.get("/status").get_data(as_text=True)


def test_a_forged_expired_or_other_keys_cookie_is_refused(app, fake, tmp_path):
    gw = app.extensions["gateway"]
    good = status_view.session_value(gw)
    assert status_view.valid_session(gw, good)
    expiry, mac = good.split(".")
    assert not status_view.valid_session(gw, f"{int(expiry) + 1}.{mac}")
    assert not status_view.valid_session(gw, status_view.session_value(gw, now=time.time() - 86400))
    for junk in (None, "", ".", "x.y", f"{expiry}.", mac):
        assert not status_view.valid_session(gw, junk)
    other = create_app(gateway_config(fake.url, tmp_path, api_key="another-local-key"))
    assert not status_view.valid_session(other.extensions["gateway"], good)   # key changed
    same = create_app(gateway_config(fake.url, tmp_path))                        # another worker
    assert status_view.valid_session(same.extensions["gateway"], good)


def test_the_api_key_header_does_not_open_the_page(app):
    c = app.test_client()
    resp = c.get("/status", headers={"Authorization": f"Bearer {LOCAL_KEY}"})
    assert PAGE not in resp.get_data(as_text=True)


def test_status_public_shows_the_page_without_login(fake, tmp_path):
    app = create_app(gateway_config(fake.url, tmp_path, status_public=True))
    resp = app.test_client().get("/status")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and PAGE in html and "Log out" not in html
    hardened(resp)
    no_key(resp)


def test_status_public_is_off_by_default(app):
    assert app.extensions["gateway"].config.status_public is False


# ---- the page itself, from a known snapshot ---------------------------------------------------

class FakeUsage:
    def __init__(self, data, history):
        self.data, self.hist = data, history

    def read(self):
        return self.data

    def history(self):
        return self.hist


class FakeRecent:
    def __init__(self, lines):
        self.lines = lines

    def read(self, limit=100):
        return self.lines[:limit]


def snapshot_page(app, now: float) -> str:
    gw = app.extensions["gateway"]
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    bucket = {"total_requests": 4, "failed_requests": 1, "prompt_tokens": 40,
              "completion_tokens": 8, "cache_read_tokens": 2, "cache_write_tokens": 0,
              "reasoning_tokens": 1}
    gw.usage = FakeUsage({**bucket, "models": {"a/<b>": bucket}, "days": {today: bucket},
                          "keys": {"gateway": bucket, "key-0123456789ab": bucket}},
                         {"day_models": {today: {"a/<b>": bucket}},
                          "day_errors": {today: {"upstream_truncated": 2, "insufficient_quota": 1,
                                                 "weird_code": 1}}})
    line = {"method": "POST", "path": "/v1/chat/completions", "surface": "chat",
            "model": "a/<b>", "key": "gateway", "client": "127.0.0.1", "scheme": "http",
            "ttfb_ms": 3.0, "duration_ms": 5.0, "tokens_in": 10, "tokens_out": 2,
            "tokens_cached": None, "tokens_reasoning": None}
    gw.recent = FakeRecent([
        {**line, "status": 502, "route": "cli", "error": "upstream_error", "time": now - 10},
        {**line, "status": 200, "route": "cli", "error": None, "time": now - 60}])
    try:
        return status_page.page(status_page.collect(gw, now))
    finally:
        del gw.usage, gw.recent


def test_the_page_shows_a_known_snapshot(app):
    html = snapshot_page(app, time.time())
    ET.fromstring(re.search(r"<svg.*?</svg>", html, re.S).group(0))        # the chart parses
    assert "a/<b>" not in html and "a/&lt;b&gt;" in html
    assert re.search(r'data-route="cli" data-kind="success"><b>cli last success</b><br>'
                     r'[^<]*\(1m 0s ago\), 200', html)
    assert 'data-route="cli" data-kind="failure"' in html and "upstream_error" in html
    assert html.count("none in the last 100 requests") == 2            # provider: neither
    assert 'data-day="today" data-counter="total_requests">4<' in html
    assert 'data-class="truncated streams"><td>truncated streams</td><td>2<' in html
    assert 'data-class="credits"' in html and 'data-class="other"' in html
    assert "<code>weird_code</code> 1" in html
    assert 'data-key="key-0123456789ab"' in html and "never stores callers" in html
    assert html.count('class="req"') == 2
    assert 'id="plan">individual-pro<' in html                     # the fake's plan for the key


def test_a_quota_error_is_shown_as_its_message(app, fake):
    fake.billing_status = 500
    html = snapshot_page(app, time.time())
    assert 'id="quota-error"' in html and 'id="plan"' not in html


def test_the_page_renders_without_history_or_recent(app):
    gw = app.extensions["gateway"]
    html = status_page.page(status_page.collect(gw))
    assert "no requests in these days" in html and "no errors today" in html
