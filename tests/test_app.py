"""The app in-process (Flask test client): config-driven behaviour and envelopes (the relay's
mechanics are in test_relay.py)."""
from __future__ import annotations

import pytest

from gateway import create_app
from tests.conftest import LOCAL_KEY, gateway_config

AUTH = {"Authorization": f"Bearer {LOCAL_KEY}"}


def make(fake, tmp_path, **overrides):
    c = create_app(gateway_config(fake.url, tmp_path, **overrides)).test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    return c


def test_exclude_models_hides_and_refuses_by_prefix_after_the_last_slash(fake, tmp_path):
    c = make(fake, tmp_path, exclude_models=["claude-", "gemini-"])
    ids = [m["id"] for m in c.get("/v1/models").json["data"]]
    assert not any(i.startswith("claude-") or "/gemini-" in i for i in ids)
    assert "deepseek/deepseek-v4-flash" in ids
    r = c.get("/v1/models/google/gemini-3.5-flash")
    assert r.status_code == 404 and r.json["error"]["type"] == "not_found_error"
    r = c.post("/v1/chat/completions", json={"model": "claude-sonnet-5",
                                             "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json["error"]["code"] == "model_not_found"
    assert fake.requests == []


@pytest.mark.parametrize("name,resolved", [
    ("deepseek/deepseek-v4-flash", "deepseek/deepseek-v4-flash"),
    ("deepseek-v4-flash", "deepseek/deepseek-v4-flash"),
    ("DEEPSEEK-V4-PRO", "deepseek/deepseek-v4-pro"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-6"),
    ("claude-sonnet-5-20260101", "claude-sonnet-5"),
    ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("kimi-k3", "moonshotai/Kimi-K3"),
    ("tencent/HY3", "tencent/Hy3"),
])
def test_loose_model_ids_resolve_to_the_exact_catalog_spelling(client, name, resolved):
    r = client.get(f"/v1/models/{name}")
    assert r.status_code == 200 and r.json["id"] == resolved


def test_body_over_the_limit_is_a_413_in_the_openai_envelope(fake, tmp_path):
    c = make(fake, tmp_path, max_body_mb=0.01)
    r = c.post("/v1/chat/completions", data=b"x" * 20000, content_type="application/json")
    assert r.status_code == 413
    assert r.json["error"]["code"] == "request_too_large" and "max_body_mb" in r.json["error"]["message"]


def test_unknown_routes_and_methods_answer_in_the_envelope(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json["error"]["code"] == "unknown_url"
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("body,param", [
    ([], None), ({"messages": []}, "model"), ({"model": 5, "messages": []}, "model"),
    ({"model": "deepseek-v4-flash"}, "messages"), ({"model": "deepseek-v4-flash", "messages": []}, "messages"),
    ({"model": "deepseek-v4-flash", "messages": ["hi"]}, "messages[0]"),
    ({"model": "deepseek-v4-flash", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0].type"),
    ({"model": "deepseek-v4-flash", "messages": [{"role": "tool", "content": "x"}]},
     "messages[0].tool_call_id"),
    ({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
     "max_tokens"),
    ({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "huge"},
     "reasoning_effort"),
    ({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
     "stream"),
    ({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search"}]}, "tools[0]"),
])
def test_malformed_fields_are_400s_naming_the_field(client, body, param):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.json
    assert r.json["error"]["type"] == "invalid_request_error"
    assert r.json["error"]["param"] == param


def test_unsupported_parameters_are_ignored(client, fake):
    r = client.post("/v1/chat/completions", json={
        "model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}],
        "top_p": 0.5, "stop": ["x"], "seed": 1, "response_format": {"type": "json_object"},
        "logprobs": False, "parallel_tool_calls": True, "user": "u", "n": 1,
        "stream_options": {"include_usage": True}, "frequency_penalty": 0})
    assert r.status_code == 200 and r.json["choices"][0]["message"]["content"] == "Hello world"


def test_developer_and_system_messages_join_into_one_system(client, fake):
    client.post("/v1/chat/completions", json={"model": "deepseek-v4-flash", "messages": [
        {"role": "system", "content": "One."}, {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
        {"role": "user", "content": "hi"}]})
    assert fake.requests[-1]["body"]["params"]["system"] == [
        {"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]


def test_cors_with_a_list_of_origins_echoes_only_allowed_ones(fake, tmp_path):
    c = make(fake, tmp_path, cors_origins="https://a.example, https://b.example")
    r = c.get("/health", headers={"Origin": "https://b.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://b.example"
    r = c.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_x_api_key_header_is_accepted(fake, tmp_path):
    c = create_app(gateway_config(fake.url, tmp_path)).test_client()
    assert c.get("/v1/models", headers={"x-api-key": LOCAL_KEY}).status_code == 200
    assert c.get("/v1/models", headers={"x-api-key": LOCAL_KEY + "x"}).status_code == 401
    assert c.get("/v1/models", headers={"Authorization": "Bearer "}).status_code == 401


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_root_answers_without_a_key(fake, tmp_path, method):
    """Claude Code probes ``HEAD /`` without credentials before it starts."""
    c = create_app(gateway_config(fake.url, tmp_path)).test_client()
    r = c.open("/", method=method)
    assert r.status_code == 200 and r.mimetype == "application/json"
    if method == "GET":
        from gateway import __version__
        assert r.json["name"] == "Command Code Gateway" and r.json["version"] == __version__
        assert "POST /v1/messages" in r.json["endpoints"] and "GET /health" in r.json["endpoints"]
    assert fake.requests == []


def test_a_model_outside_the_plan_says_how_to_map_it(fake, tmp_path):
    """403 model_not_in_plan is an error a client cannot act on: the message names model_map."""
    c = make(fake, tmp_path)
    r = c.post("/v1/messages", json={"model": "claude-opus-5", "max_tokens": 10,
                                     "messages": [{"role": "user", "content": "[[http_403_model]]"}]})
    assert r.status_code == 403 and r.json["error"]["type"] == "permission_error"
    assert "model_map" in r.json["error"]["message"]
    assert '"claude-*": "deepseek/deepseek-v4-pro"' in r.json["error"]["message"]
