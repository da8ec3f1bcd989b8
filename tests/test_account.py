"""Plans, quota and the model list, in one process (Flask's test client against the fake).

The end-to-end behaviour through gunicorn is in test_routes_integration.py; this file pins the
caching and failure rules that are hard to see from outside: how often Command Code is asked.
"""
from __future__ import annotations

from gateway import create_app
from tests.conftest import LOCAL_KEY, gateway_config
from tests.fake_upstream import CREDITS_PATH, GO_KEY, NEW_PROVIDER_MODEL, PROVIDER_MODELS_PATH


def make(fake, tmp_path, **overrides):
    app = create_app(gateway_config(fake.url, tmp_path, **overrides))
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    return app, c


def calls(fake, path):
    return [r for r in fake.requests if r["path"] == path]


def ids(c):
    return {m["id"] for m in c.get("/v1/models").json["data"]}


def test_credits_are_asked_once_a_minute_for_usage_and_models(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": GO_KEY})
    for _ in range(3):
        assert c.get("/usage").json["upstream"]["plan"] == "individual-go"
        assert "claude-sonnet-5" not in ids(c)
    assert len(calls(fake, CREDITS_PATH)) == 1
    assert calls(fake, CREDITS_PATH)[0]["headers"]["authorization"] == f"Bearer {GO_KEY}"


def test_a_billing_failure_is_retried_after_ten_seconds_not_at_every_request(fake, tmp_path, monkeypatch):
    app, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": GO_KEY})
    fake.billing_status = 500
    for _ in range(3):
        r = c.get("/usage")
        assert r.status_code == 200 and "error" in r.json["upstream"]
    assert len(calls(fake, CREDITS_PATH)) == 1
    assert "claude-opus-5" in ids(c)            # unknown plan: nothing hidden
    fake.billing_status = 200
    account = app.extensions["gateway"].account
    for label, (expires, value) in list(account._cache.items()):
        account._cache[label] = (expires - 11, value)      # ten seconds later
    assert c.get("/usage").json["upstream"]["plan"] == "individual-go"


def test_a_fixed_plan_or_all_asks_nothing(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="goat")
    listed = ids(c)
    assert "google/gemini-3.8-flash" in listed and "claude-sonnet-5" not in listed
    _, c = make(fake, tmp_path, plan="all")
    assert "claude-opus-5" in ids(c)
    assert calls(fake, CREDITS_PATH) == []


def test_exclude_models_beats_the_plan_and_include_models(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="go", include_models=["claude-"], exclude_models=["claude-opus"])
    listed = ids(c)
    assert "claude-sonnet-5" in listed and "claude-opus-5" not in listed


def test_model_list_fetch_merges_and_a_failed_fetch_keeps_what_was_there(fake, tmp_path):
    app, c = make(fake, tmp_path, discover_models=True)
    gw = app.extensions["gateway"]
    assert gw.discovery.fetch_once() is True
    assert NEW_PROVIDER_MODEL in ids(c)
    fake.models_status = 503
    assert gw.discovery.fetch_once() is False
    assert NEW_PROVIDER_MODEL in ids(c)         # the last good list stays
    assert calls(fake, PROVIDER_MODELS_PATH)


def test_no_upstream_key_means_no_plan_lookup_and_an_upstream_error_in_usage(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": None})
    assert "claude-opus-5" in ids(c)
    assert c.get("/usage").json["upstream"] == {"error": "the gateway has no Command Code API key"}
    assert calls(fake, CREDITS_PATH) == []
