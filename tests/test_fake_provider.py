"""Self-test of the fake's account routes and Provider API (tests/fake_upstream.py).

Why: the gateway's provider route, ``auto`` selection, ``/usage`` and model discovery are tested
against this fake.  If it spoke a dialect of SSE that only the gateway's own decoder accepts, or
let through requests the real API rejects, those tests would pass for the wrong reasons.  So the
official ``openai`` and ``anthropic`` SDKs are used here as oracles: pointed straight at the
fake, they must parse every stream (text, reasoning, tool calls, unicode cut mid-character, usage)
and raise their own exception classes for its errors.  The request validators are checked rule
by rule, since they are what catches gateway bugs.
"""
from __future__ import annotations

import copy
import json
import time

import anthropic
import openai
import pytest
import requests

from tests import fake_upstream as fu
from tests.fake_upstream import (CHAT_PATH, CREDITS_PATH, GO_KEY, MAX_KEY, MESSAGES_PATH,
                                 NEW_PROVIDER_MODEL, PRO_KEY, PROVIDER_MODELS_PATH,
                                 SUBSCRIPTIONS_PATH, UNICODE_TEXT, UPGRADE_REQUIRED_MESSAGE, USAGE,
                                 USAGE_SUMMARY_PATH, WHOAMI_PATH, FakeUpstream)

CHAT_MODEL = "deepseek/deepseek-v4-flash"
CLAUDE = "claude-sonnet-5"
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
PNG_URL = "data:image/png;base64," + PNG_B64


def take_violations(fake) -> list[str]:
    """The violations recorded so far, cleared (for tests that provoke them on purpose)."""
    found = list(fake.violations)
    del fake.violations[:]
    return found


def get(fake, path, key=PRO_KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return requests.get(fake.url + path, headers=headers, timeout=5, **kw)


def chat_body(text="hi", model=CHAT_MODEL, **extra) -> dict:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": text}], **extra}


def messages_body(text="hi", model=CLAUDE, **extra) -> dict:
    return {"model": model, "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": text}], **extra}


def post_chat(fake, body, key=PRO_KEY, headers=None, **kw):
    h = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return requests.post(fake.url + CHAT_PATH, json=body, headers={**h, **(headers or {})}, timeout=10, **kw)


def post_messages(fake, body, key=PRO_KEY, headers=None, **kw):
    h = {"x-api-key": key, "anthropic-version": "2023-06-01"} if key is not None else {}
    return requests.post(fake.url + MESSAGES_PATH, json=body, headers={**h, **(headers or {})}, timeout=10, **kw)


@pytest.fixture(scope="module")
def oai(fake_server):
    """The official OpenAI SDK pointed straight at the fake's Provider API (tests also take ``fake``)."""
    return openai.OpenAI(base_url=fake_server.url + "/provider/v1", api_key=PRO_KEY, max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def ant(fake_server):
    """The official Anthropic SDK; it appends ``/v1/messages`` to ``base_url``."""
    return anthropic.Anthropic(base_url=fake_server.url + "/provider", api_key=PRO_KEY, max_retries=0, timeout=10)


# ---------------------------------------------------------------------------------------------
# Keys, plans and the account routes (docs/protocol.md §9)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, plan", [(GO_KEY, "individual-go"), (PRO_KEY, "individual-pro"),
                                       (MAX_KEY, "individual-max"), ("user_anything_else", "individual-pro")])
def test_credits_body_per_plan(fake, key, plan):
    now_ms = time.time() * 1000
    resp = get(fake, CREDITS_PATH, key)
    assert resp.status_code == 200
    body = resp.json()
    assert body["credits"] == {"monthlyCredits": 7.42, "purchasedCredits": 0, "freeCredits": 0,
                               "planId": plan, "belowThreshold": False, "creditThreshold": 1}
    windows = body["windowLimits"]
    assert windows["limited"] is True and windows["exceeded"] is None
    assert {k: windows["fiveHour"][k] for k in ("used", "cap", "exceeded")} == {"used": 0.8, "cap": 2.0, "exceeded": False}
    assert {k: windows["weekly"][k] for k in ("used", "cap", "exceeded")} == {"used": 3.1, "cap": 5.0, "exceeded": False}
    assert abs(windows["fiveHour"]["resetAt"] - (now_ms + 2 * 3600e3)) < 60e3      # epoch milliseconds
    assert abs(windows["weekly"]["resetAt"] - (now_ms + 5 * 86400e3)) < 60e3
    assert fake.requests[-1]["path"] == CREDITS_PATH and fake.requests[-1]["method"] == "GET"


def test_credits_override_and_plans_toggle(fake):
    fake.credits[PRO_KEY] = {"credits": {"planId": "individual-pro", "monthlyCredits": 0}, "windowLimits": None}
    assert get(fake, CREDITS_PATH, PRO_KEY).json() == fake.credits[PRO_KEY]
    assert get(fake, CREDITS_PATH, MAX_KEY).json()["credits"]["planId"] == "individual-max"
    fake.plans[MAX_KEY] = "individual-go"
    assert get(fake, CREDITS_PATH, MAX_KEY).json()["credits"]["planId"] == "individual-go"
    assert get(fake, SUBSCRIPTIONS_PATH, MAX_KEY).json()["data"]["planId"] == "individual-go"
    assert post_chat(fake, chat_body(), MAX_KEY).status_code == 403


def test_reset_restores_plans_and_toggles():
    fake = FakeUpstream()           # never started: reset works on the state alone
    fake.plans[PRO_KEY] = "individual-go"
    del fake.plans[GO_KEY]
    fake.credits[PRO_KEY] = {}
    fake.billing_status, fake.models_status, fake.models_calls = 500, 503, 7
    plans = fake.plans
    fake.reset()
    assert fake.plans == fu.DEFAULT_PLANS and fake.plans is plans
    assert (fake.credits, fake.billing_status, fake.models_status, fake.models_calls) == ({}, 200, 200, 0)
    assert fake.plan_of(GO_KEY) == "individual-go" and fake.plan_of(PRO_KEY) == "individual-pro"
    assert fake.plan_of(MAX_KEY) == "individual-max"
    for bad in (None, "", "sk-123", "user_invalid_key", "USER_x"):
        assert fake.plan_of(bad) is None


def test_other_account_routes(fake):
    who = get(fake, WHOAMI_PATH).json()
    assert who["success"] is True and who["user"]["userName"] == "ada" and "orgLimits" not in who
    who = get(fake, WHOAMI_PATH + "?limits=1").json()
    assert [x["scope"] for x in who["orgLimits"]] == ["org", "model"]
    sub = get(fake, SUBSCRIPTIONS_PATH + "?orgId=org_1", MAX_KEY).json()
    assert sub["success"] is True and sub["data"]["planId"] == "individual-max"
    assert sub["data"]["status"] == "active" and sub["data"]["cancelAtPeriodEnd"] is False
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    assert sub["data"]["currentPeriodStart"] < now < sub["data"]["currentPeriodEnd"]
    usage = get(fake, USAGE_SUMMARY_PATH + "?since=2026-09-01T00:00:00.000Z").json()
    assert usage["totalCount"] == 1234 and usage["periodBasis"] == "billing-period"


@pytest.mark.parametrize("path", fu.ACCOUNT_PATHS)
def test_account_routes_billing_status_toggle(fake, path):
    fake.billing_status = 500
    resp = get(fake, path)
    assert resp.status_code == 500
    err = resp.json()
    assert err["success"] is False and err["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert err["error"]["status"] == 500 and err["error"]["message"]
    fake.billing_status = 503
    assert get(fake, path).json()["error"]["status"] == 503


@pytest.mark.parametrize("path", fu.ACCOUNT_PATHS)
@pytest.mark.parametrize("key", ["user_invalid_0123", "sk-not-a-command-code-key"])
def test_account_routes_reject_bad_keys(fake, path, key):
    resp = get(fake, path, key)
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": {"code": "UNAUTHORIZED", "status": 401,
                                                       "message": "Invalid 'Authorization' header"}}


def test_account_routes_without_bearer_is_a_violation(fake):
    resp = requests.get(fake.url + CREDITS_PATH, headers={"x-api-key": PRO_KEY}, timeout=5)
    assert resp.status_code == 401
    found = take_violations(fake)
    assert len(found) == 1 and "Authorization: Bearer" in found[0]


# ---------------------------------------------------------------------------------------------
# GET /provider/v1/models (docs/protocol.md §11.3)
# ---------------------------------------------------------------------------------------------

def test_models_list(fake, oai):
    resp = requests.get(fake.url + PROVIDER_MODELS_PATH, timeout=5)        # no auth needed
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["deepseek/deepseek-v4-flash"] == {
        "id": "deepseek/deepseek-v4-flash", "name": "DeepSeek V4 Flash", "context_length": 1000000,
        "max_output_tokens": 384000, "supported_endpoints": ["/v1/chat/completions", "/v1/responses"]}
    assert by_id["claude-sonnet-5"]["supported_endpoints"] == ["/v1/messages"]
    assert by_id["gpt-5.4"]["context_length"] == 400000 and by_id["gpt-5.4"]["max_output_tokens"] == 128000
    assert by_id[NEW_PROVIDER_MODEL] == {"id": "newlab/nova-2", "name": "Nova 2", "context_length": 500000,
                                         "max_output_tokens": 65536,
                                         "supported_endpoints": ["/v1/chat/completions", "/v1/responses"]}
    assert NEW_PROVIDER_MODEL in [m.id for m in oai.models.list()]      # the SDK reads it too
    assert fake.models_calls == 2


def test_models_status_toggle(fake, oai):
    fake.models_status = 503
    resp = requests.get(fake.url + PROVIDER_MODELS_PATH, timeout=5)
    assert resp.status_code == 503
    err = resp.json()["error"]
    assert err["type"] == "server_error" and err["message"] and err["param"] is None
    with pytest.raises(openai.InternalServerError):
        oai.models.list()
    fake.models_status = 401
    with pytest.raises(openai.AuthenticationError):
        oai.models.list()
    assert fake.models_calls == 3


# ---------------------------------------------------------------------------------------------
# Auth, plan gate, routing rule (docs/protocol.md §11.1, §11.4)
# ---------------------------------------------------------------------------------------------

def test_go_plan_gets_upgrade_required_on_chat(fake, oai):
    resp = post_chat(fake, chat_body(), GO_KEY)
    assert resp.status_code == 403
    assert resp.json() == {"error": {"message": UPGRADE_REQUIRED_MESSAGE, "type": "permission_error",
                                     "code": "upgrade_required", "param": None}}
    go = openai.OpenAI(base_url=fake.url + "/provider/v1", api_key=GO_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        go.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    assert e.value.code == "upgrade_required"


def test_go_plan_gets_upgrade_required_on_messages(fake):
    resp = post_messages(fake, messages_body(), GO_KEY)
    assert resp.status_code == 403
    assert resp.json() == {"type": "error", "error": {"type": "permission_error", "message": UPGRADE_REQUIRED_MESSAGE}}
    go = anthropic.Anthropic(base_url=fake.url + "/provider", api_key=GO_KEY, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        with go.messages.stream(model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()
    assert e.value.body["error"]["message"].startswith("upgrade_required:")


def test_bad_keys_get_401(fake):
    for key in (None, "user_invalid_key", "sk-123"):
        resp = post_chat(fake, chat_body(), key)
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error" and resp.json()["error"]["param"] is None
        resp = post_messages(fake, messages_body(), key)
        assert resp.status_code == 401
        assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "authentication_error"
    # x-api-key is accepted on /messages only; Bearer works on both
    assert post_chat(fake, chat_body(), None, headers={"x-api-key": PRO_KEY}).status_code == 401
    assert post_messages(fake, messages_body(), None, headers={"Authorization": f"Bearer {PRO_KEY}"}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=fake.url + "/provider/v1", api_key="user_invalid", max_retries=0).chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=fake.url + "/provider", api_key="nope", max_retries=0).messages.create(
            model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "hi"}], stream=True)


def test_wrong_endpoint_is_400_and_a_violation(fake):
    resp = post_chat(fake, chat_body(model=CLAUDE))
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and "/v1/messages" in err["message"]
    resp = post_messages(fake, messages_body(model="gpt-5.4"))
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert "/v1/chat/completions" in resp.json()["error"]["message"]
    found = take_violations(fake)
    assert len(found) == 2 and all("wrong endpoint" in v for v in found)


def test_cli_headers_are_violations(fake):
    resp = post_chat(fake, chat_body(), headers={"x-command-code-version": "1.64.0", "x-session-id": "s"})
    assert resp.status_code == 200
    found = take_violations(fake)
    assert len(found) == 2 and "x-command-code-version" in found[0] and "x-session-id" in found[1]
    post_messages(fake, messages_body(), headers={"x-cli-environment": "production", "User-Agent": "cli"})
    assert len(take_violations(fake)) == 1


def test_requests_are_recorded_like_generate(fake):
    body = chat_body("[[slow:2]] go")
    post_chat(fake, body, headers={"User-Agent": "gw"})
    rec = fake.requests[-1]
    assert (rec["method"], rec["path"], rec["body"], rec["scenario"], rec["scenario_arg"]) == (
        "POST", CHAT_PATH, body, "slow", "2")
    assert rec["headers"]["user-agent"] == "gw" and rec["headers"]["authorization"] == f"Bearer {PRO_KEY}"
    assert fake.first_byte_at and fake.first_byte_at[-1] >= rec["received_at"]


# ---------------------------------------------------------------------------------------------
# Validation rules (strict mode)
# ---------------------------------------------------------------------------------------------

def _calls(*ids):
    return [{"id": i, "type": "function", "function": {"name": "read_file", "arguments": json.dumps({"path": i})}}
            for i in ids]


CHAT_OK = {
    "model": CHAT_MODEL, "stream": True, "stream_options": {"include_usage": True},
    "max_tokens": 1000, "temperature": 0.5, "top_p": 1, "reasoning_effort": "high", "stop": ["END"],
    "user": "u1",
    "tools": [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                                "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": "auto",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": PNG_URL}}]},
        {"role": "assistant", "content": None, "reasoning_content": "I should read both.",
         "tool_calls": _calls("c1", "c2")},
        {"role": "tool", "tool_call_id": "c2", "content": "B"},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "A"}]},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "thanks"},
    ],
}

MESSAGES_OK = {
    "model": CLAUDE, "max_tokens": 4096, "stream": True,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "thinking": {"type": "enabled", "budget_tokens": 2048}, "temperature": 1,
    "tools": [{"name": "read_file", "description": "Read a file", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"}, "metadata": {"user_id": "u1"}, "stop_sequences": ["END"],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": PNG_B64}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "read both", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "t1", "name": "read_file", "input": {"path": "a"}},
            {"type": "tool_use", "id": "t2", "name": "read_file", "input": {"path": "b"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t2", "content": "B"},
            {"type": "tool_result", "tool_use_id": "t1", "is_error": False,
             "content": [{"type": "text", "text": "A"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}]},
            {"type": "text", "text": "go on"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "opaque"},
                                          {"type": "text", "text": "Done."}]},
        {"role": "user", "content": "thanks"},
    ],
}


def test_valid_bodies_have_no_violations():
    assert fu.validate_chat_body(CHAT_OK) == []
    assert fu.validate_messages_body(MESSAGES_OK) == []
    assert fu.validate_chat_body(chat_body()) == []
    assert fu.validate_messages_body(messages_body()) == []
    assert fu.validate_provider_headers({"Authorization": "Bearer x", "User-Agent": "gw",
                                         "anthropic-version": "2023-06-01"}) == []


def _set(path, value):
    def mutate(body):
        *parents, last = path
        target = body
        for p in parents:
            target = target[p]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return mutate


DELETE = object()
M = "messages"

CHAT_RULES = [
    ("unknown key", _set(["n"], 2), "unexpected key 'n'"),
    ("stream false", _set(["stream"], False), "stream must be true"),
    ("stream missing", _set(["stream"], DELETE), "stream must be true"),
    ("model missing", _set(["model"], DELETE), "model must be a non-empty string"),
    ("claude model", _set(["model"], CLAUDE), "wrong endpoint"),
    ("empty messages", _set([M], []), "non-empty list"),
    ("bad role", _set([M, 0, "role"], "developer"), "role must be"),
    ("audio part", _set([M, 1, "content", 1], {"type": "input_audio", "input_audio": {}}), "not allowed"),
    ("remote image", _set([M, 1, "content", 1, "image_url", "url"], "https://x/y.png"), "data:"),
    ("empty user", _set([M, 6, "content"], " "), "empty user message"),
    ("assistant list content", _set([M, 5, "content"], [{"type": "text", "text": "x"}]), "string or null"),
    ("reasoning not str", _set([M, 2, "reasoning_content"], ["x"]), "reasoning_content must be a string"),
    ("arguments object", _set([M, 2, "tool_calls", 0, "function", "arguments"], {"path": "a"}), "arguments must be"),
    ("arguments array", _set([M, 2, "tool_calls", 0, "function", "arguments"], "[1]"), "arguments must be"),
    ("call type", _set([M, 2, "tool_calls", 0, "type"], "tool"), "type must be 'function'"),
    ("duplicate call id", _set([M, 2, "tool_calls", 1, "id"], "c1"), "duplicate tool call id"),
    ("unanswered call", lambda b: b[M].pop(4), "not answered"),
    ("user between calls and results", lambda b: b[M].insert(3, {"role": "user", "content": "x"}), "not right after"),
    ("unknown result id", _set([M, 3, "tool_call_id"], "c9"), "not an open call"),
    ("answered twice", _set([M, 4, "tool_call_id"], "c2"), "not an open call"),
    ("stray tool message", lambda b: b[M].insert(1, {"role": "tool", "tool_call_id": "c1", "content": "x"}),
     "not right after an assistant"),
    ("tool content object", _set([M, 3, "content"], {"text": "B"}), "text parts"),
    ("empty assistant", _set([M, 5, "content"], None), "neither content nor tool_calls"),
    ("calls never answered", lambda b: b[M].__delitem__(slice(3, None)), "never answered"),
    ("tool without parameters", _set(["tools", 0, "function", "parameters"], DELETE), "parameters must be an object"),
    ("tool type", _set(["tools", 0, "type"], "custom"), "type must be 'function'"),
    ("tool_choice any", _set(["tool_choice"], "any"), "tool_choice must be"),
    ("tool_choice unknown function", _set(["tool_choice"], {"type": "function", "function": {"name": "x"}}),
     "not in tools"),
    ("tool_choice without tools", _set(["tools"], DELETE), "without tools"),
    ("max_tokens zero", _set(["max_tokens"], 0), "max_tokens must be a positive integer"),
    ("max_completion_tokens string", _set(["max_completion_tokens"], "10"), "max_completion_tokens must be"),
    ("temperature too high", _set(["temperature"], 2.5), "temperature must be a number in 0..2"),
    ("effort", _set(["reasoning_effort"], "extreme"), "reasoning_effort must be one of"),
    ("stream_options", _set(["stream_options"], {"include_usage": "yes"}), "stream_options"),
]


@pytest.mark.parametrize("mutate, expected", [r[1:] for r in CHAT_RULES], ids=[r[0] for r in CHAT_RULES])
def test_chat_validation_rule(mutate, expected):
    body = copy.deepcopy(CHAT_OK)
    mutate(body)
    problems = fu.validate_chat_body(body)
    assert any(expected in p for p in problems), problems


MESSAGES_RULES = [
    ("unknown key", _set(["n"], 2), "unexpected key 'n'"),
    ("not claude", _set(["model"], "gpt-5.4"), "wrong endpoint"),
    ("max_tokens missing", _set(["max_tokens"], DELETE), "max_tokens is required"),
    ("stream false", _set(["stream"], False), "stream must be true"),
    ("first is assistant", lambda b: b[M].pop(0), "first message must be a user message"),
    ("no alternation", lambda b: b[M].append({"role": "user", "content": "again"}), "two consecutive 'user'"),
    ("system role", _set([M, 4, "role"], "system"), "role must be user or assistant"),
    ("empty text block", _set([M, 0, "content", 0, "text"], ""), "empty text block"),
    ("blank text block", _set([M, 3, "content", 1, "text"], "  \n"), "empty text block"),
    ("document block", _set([M, 0, "content", 1], {"type": "document", "source": {}}), "not allowed in a user message"),
    ("url image", _set([M, 0, "content", 1, "source"], {"type": "url", "url": "https://x"}), "source must be"),
    ("data url in image", _set([M, 0, "content", 1, "source", "data"], PNG_URL), "bare base64"),
    ("unsigned thinking", _set([M, 1, "content", 0, "signature"], ""), "signature"),
    ("thinking in user turn", _set([M, 4, "content"], [{"type": "thinking", "thinking": "x", "signature": "s"}]),
     "not allowed in a user message"),
    ("tool_use input string", _set([M, 1, "content", 2, "input"], '{"path": "a"}'), "input must be an object"),
    ("tool_use without id", _set([M, 1, "content", 2, "id"], DELETE), "id must be a non-empty string"),
    ("unanswered tool_use", lambda b: b[M][2]["content"].pop(1), "not answered by a tool_result"),
    ("results after text", lambda b: b[M][2]["content"].insert(0, {"type": "text", "text": "first"}),
     "tool_result after another block"),
    ("unknown tool_result", _set([M, 2, "content", 0, "tool_use_id"], "t9"), "not an open tool_use"),
    ("result in a later turn", lambda b: b[M][4].update(content=[{"type": "tool_result", "tool_use_id": "t1"}]),
     "not an open tool_use"),
    ("tool_result is_error", _set([M, 2, "content", 1, "is_error"], "no"), "is_error must be a boolean"),
    ("tool_result content block", _set([M, 2, "content", 0, "content"], [{"type": "tool_use"}]),
     "must be text or image"),
    ("tool_use never answered", lambda b: b[M].__delitem__(slice(2, None)), "never answered"),
    ("system block type", _set(["system", 0, "type"], "image"), "messages.system[0] must be"),
    ("bad cache_control", _set(["system", 0, "cache_control"], {"type": "persistent"}), "cache_control must be"),
    ("too many breakpoints", lambda b: b["system"].extend(
        [{"type": "text", "text": f"s{i}", "cache_control": {"type": "ephemeral"}} for i in range(4)]), "at most 4"),
    ("tool without input_schema", _set(["tools", 0, "input_schema"], DELETE), "input_schema must be an object"),
    ("openai-style tool", _set(["tools", 0], {"type": "function", "function": {"name": "f"}}), "unexpected key"),
    ("tool_choice required", _set(["tool_choice"], {"type": "required"}), "tool_choice must be"),
    ("tool_choice unknown tool", _set(["tool_choice"], {"type": "tool", "name": "x"}), "not in tools"),
    ("budget too small", _set(["thinking", "budget_tokens"], 512), ">= 1024"),
    ("budget not below max_tokens", _set(["thinking", "budget_tokens"], 4096), "below max_tokens"),
    ("temperature with thinking", _set(["temperature"], 0.5), "absent or 1 when thinking"),
    ("adaptive thinking", _set(["thinking"], {"type": "adaptive"}), "thinking must be"),
    ("temperature range", lambda b: b.update(thinking={"type": "disabled"}, temperature=1.5),
     "temperature must be a number in 0..1"),
    ("metadata", _set(["metadata"], {"session": "x"}), "metadata must be"),
]


@pytest.mark.parametrize("mutate, expected", [r[1:] for r in MESSAGES_RULES], ids=[r[0] for r in MESSAGES_RULES])
def test_messages_validation_rule(mutate, expected):
    body = copy.deepcopy(MESSAGES_OK)
    mutate(body)
    problems = fu.validate_messages_body(body)
    assert any(expected in p for p in problems), problems


def test_violations_recorded_by_the_routes_and_scenario_still_plays(fake):
    body = copy.deepcopy(CHAT_OK)
    body["messages"][6]["content"] = "[[echo]] thanks"
    del body["messages"][4]                         # c1 never answered
    resp = post_chat(fake, body)
    assert resp.status_code == 200 and "thanks" in resp.text
    found = take_violations(fake)
    assert len(found) == 1 and "'c1'" in found[0] and found[0].startswith("request #0 (echo)")
    body = copy.deepcopy(MESSAGES_OK)
    body["temperature"] = 0.2
    assert post_messages(fake, body).status_code == 200
    found = take_violations(fake)
    assert len(found) == 1 and "temperature" in found[0]


def test_full_conversations_through_the_sdks_are_valid(fake, oai, ant):
    """The SDKs' own serialisation of a rich valid history passes every check (fixture asserts)."""
    body = copy.deepcopy(CHAT_OK)
    stream = oai.chat.completions.create(**{k: v for k, v in body.items() if k != "stream"}, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello world"
    body = copy.deepcopy(MESSAGES_OK)
    del body["stream"]
    extra = {"temperature": body.pop("temperature")}      # this SDK version has no temperature argument
    with ant.messages.stream(**body, extra_body=extra) as s:
        assert s.get_final_message().content[0].text == "Hello world"


# ---------------------------------------------------------------------------------------------
# Scenario selection
# ---------------------------------------------------------------------------------------------

def test_scenario_from_last_user_message(fake):
    body = copy.deepcopy(CHAT_OK)
    body["messages"][1]["content"][0]["text"] = "[[http_500]]"
    body["messages"][6]["content"] = [{"type": "text", "text": "[[echo]] hello"}, {"type": "text", "text": "there"}]
    resp = post_chat(fake, body)
    assert fake.requests[-1]["scenario"] == "echo" and "hello\\nthere" in resp.text
    # messages: a user turn of tool results only is skipped (on the CLI route it is a tool message)
    body = copy.deepcopy(MESSAGES_OK)
    body["messages"] = body["messages"][:3]
    body["messages"][0]["content"][0]["text"] = "[[parallel_tools]] look"
    body["messages"][2]["content"].pop()            # only the two tool_result blocks remain
    post_messages(fake, body)
    assert fake.requests[-1]["scenario"] == "parallel_tools"
    body["messages"][2]["content"].append({"type": "text", "text": "[[fast]]"})
    post_messages(fake, body)
    assert fake.requests[-1]["scenario"] == "fast"
    post_chat(fake, chat_body("no marker"))
    assert fake.requests[-1]["scenario"] == "text"


def test_image_scenario_counts_provider_images(fake, oai, ant):
    content = [{"type": "text", "text": "[[image]]"}, {"type": "image_url", "image_url": {"url": PNG_URL}},
               {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}}]
    stream = oai.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": content}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "images=2"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    with ant.messages.stream(model=CLAUDE, max_tokens=100, messages=[
            {"role": "user", "content": [{"type": "text", "text": "[[image]]"}, image, image, image]}]) as s:
        assert s.get_final_text() == "images=3"


def test_unknown_scenario_is_400_and_a_violation(fake):
    resp = post_chat(fake, chat_body("[[nope]]"))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_scenario"
    resp = post_messages(fake, messages_body("[[error_first:zzz]]"))
    assert resp.status_code == 400 and resp.json()["type"] == "error"
    assert len(take_violations(fake)) == 2


# ---------------------------------------------------------------------------------------------
# Streams, with the official SDKs as oracles
# ---------------------------------------------------------------------------------------------

def read_openai(stream) -> dict:
    """Text, reasoning, assembled tool calls, finish reason, usage and first-delta role of an SDK stream."""
    out = {"text": "", "reasoning": "", "calls": {}, "finish": None, "usage": None, "role": None}
    for chunk in stream:
        if chunk.usage is not None:
            out["usage"] = chunk.usage
        for choice in chunk.choices:
            d = choice.delta
            out["role"] = out["role"] or d.role
            out["text"] += d.content or ""
            out["reasoning"] += getattr(d, "reasoning_content", None) or ""
            for tc in d.tool_calls or ():
                entry = out["calls"].setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = tc.id or entry["id"]
                if tc.function is not None:
                    entry["name"] = tc.function.name or entry["name"]
                    entry["arguments"] += tc.function.arguments or ""
            out["finish"] = choice.finish_reason or out["finish"]
    return out


def chat(oai, text, model=CHAT_MODEL):
    return oai.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], stream=True,
                                       stream_options={"include_usage": True})


OPENAI_EXPECTED = {
    "text": ("Hello world", "", [], "stop"),
    "reasoning": ("4", "Let me think.", [], "stop"),
    "tool_call": ("", "", [("call_1", "read_file", {"file_path": "a.txt"})], "tool_calls"),
    "parallel_tools": ("Checking.", "", [("call_a", "get_weather", {"city": "Paris"}),
                                         ("call_b", "get_weather", {"city": "Tokyo"})], "tool_calls"),
    "unicode": (UNICODE_TEXT, "", [], "stop"),
    "cache": ("cached", "", [], "stop"),
    "string_input": ("", "", [("call_s1", "read_file", {"a": 1}), ("call_s2", "read_file", {"b": 2})], "tool_calls"),
    "server_tool": ("done", "", [], "stop"),
    "garbage": ("ok", "", [], "stop"),
    "late_events": ("Done.", "", [], "stop"),
    "length": ("This answer was cut", "", [], "length"),
    "raw_truncation": ("Truncated answ", "", [], "length"),
    "content_filter": ("", "", [], "content_filter"),
    "pause_turn": ("Part one. Part two.", "", [], "stop"),
}


@pytest.mark.parametrize("scenario", list(OPENAI_EXPECTED))
def test_openai_sdk_parses_stream(fake, oai, scenario):
    text, reasoning, calls, finish = OPENAI_EXPECTED[scenario]
    got = read_openai(chat(oai, f"[[{scenario}]]"))
    assert (got["text"], got["reasoning"], got["finish"], got["role"]) == (text, reasoning, finish, "assistant")
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(got["calls"].items())] == calls
    u, want = got["usage"], USAGE[scenario]
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (want["input"], want["output"], want["total"])
    assert u.prompt_tokens_details.cached_tokens == want["cache_read"]
    assert u.prompt_tokens_details.cache_write_tokens == want["cache_write"]
    assert u.completion_tokens_details.reasoning_tokens == want["reasoning"]


def test_chat_wire_shape(fake):
    resp = post_chat(fake, chat_body("[[tool_call]]", model=NEW_PROVIDER_MODEL), stream=True)
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    pieces = list(resp.raw.stream(1 << 16, decode_content=False))
    raw = b"".join(pieces).decode()
    assert len(pieces) > 20                         # split like the NDJSON: lines cut across chunks
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == NEW_PROVIDER_MODEL
               and c["id"].startswith("chatcmpl-") for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    first = chunks[0]["choices"][0]["delta"]
    assert first == {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": ""}}]}
    argument_chunks = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-2]]
    assert len(argument_chunks) >= 2 and json.loads("".join(argument_chunks)) == {"file_path": "a.txt"}
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == USAGE["tool_call"]["input"]


def test_every_multibyte_character_is_cut(fake):
    """SSE lines and UTF-8 characters are cut between chunks (the SDK tests parse the same bytes)."""
    for resp in (post_chat(fake, chat_body("[[unicode]]"), stream=True),
                 post_messages(fake, messages_body("[[echo]] é你🌍"), stream=True)):
        pieces = list(resp.raw.stream(1 << 16, decode_content=False))
        assert max(len(p) for p in pieces) <= fake.sse_chunk_size
        leads = [p[-1] for p in pieces if p[-1] >= 0xC0]       # pieces ending on a UTF-8 lead byte
        body = b"".join(pieces)
        assert len(leads) == sum(1 for b in body if b >= 0xC0) > 0
        assert "🌍" in body.decode()


ANTHROPIC_EXPECTED = {
    "text": ([("text", "Hello world")], "end_turn"),
    "reasoning": ([("thinking", "Let me think."), ("text", "4")], "end_turn"),
    "tool_call": ([("tool_use", ("call_1", "read_file", {"file_path": "a.txt"}))], "tool_use"),
    "parallel_tools": ([("text", "Checking."), ("tool_use", ("call_a", "get_weather", {"city": "Paris"})),
                        ("tool_use", ("call_b", "get_weather", {"city": "Tokyo"}))], "tool_use"),
    "unicode": ([("text", UNICODE_TEXT)], "end_turn"),
    "cache": ([("text", "cached")], "end_turn"),
    "garbage": ([("text", "ok")], "end_turn"),
    "length": ([("text", "This answer was cut")], "max_tokens"),
    "content_filter": ([], "refusal"),
    "reasoning_silence": ([("thinking", "hmm"), ("text", "Answer after thinking.")], "end_turn"),
}


def _block(b):
    if b.type == "text":
        return ("text", b.text)
    if b.type == "thinking":
        assert b.signature                          # a thinking block always closes with its signature
        return ("thinking", b.thinking)
    return ("tool_use", (b.id, b.name, b.input))


@pytest.mark.parametrize("scenario", list(ANTHROPIC_EXPECTED))
def test_anthropic_sdk_parses_stream(fake, ant, scenario):
    blocks, stop = ANTHROPIC_EXPECTED[scenario]
    marker = "[[reasoning_silence:0.05]]" if scenario == "reasoning_silence" else f"[[{scenario}]]"
    with ant.messages.stream(model=CLAUDE, max_tokens=2000, messages=[{"role": "user", "content": marker}]) as s:
        msg = s.get_final_message()
    assert [_block(b) for b in msg.content] == blocks
    assert msg.stop_reason == stop and msg.id.startswith("msg_") and msg.model == CLAUDE
    u, want = msg.usage, USAGE[scenario]
    assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == want["input"]
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (want["cache_read"], want["cache_write"])
    assert u.output_tokens == want["output"]
    if scenario == "cache":
        assert u.cache_creation.ephemeral_1h_input_tokens == 500


def test_messages_wire_shape(fake):
    resp = post_messages(fake, messages_body("[[tool_call]]"), stream=True)
    assert resp.headers["Content-Type"] == "text/event-stream"
    events = [e for e in b"".join(resp.raw.stream(1 << 16, decode_content=False)).decode().split("\n\n") if e]
    parsed = []
    for e in events:
        name_line, data_line = e.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: "):])
        assert data["type"] == name_line[len("event: "):]
        parsed.append(data)
    assert [d["type"] for d in parsed] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                           "content_block_delta", "content_block_delta", "content_block_stop",
                                           "message_delta", "message_stop"]
    assert parsed[0]["message"]["usage"] == {"input_tokens": 50, "cache_read_input_tokens": 0,
                                             "cache_creation_input_tokens": 0, "output_tokens": 1}
    assert parsed[2]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {}}
    assert json.loads("".join(d["delta"]["partial_json"] for d in parsed[3:6])) == {"file_path": "a.txt"}
    assert parsed[7]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert parsed[7]["usage"] == {"output_tokens": 20}


def test_truncated_streams_end_without_their_end_marker(fake, oai, ant):
    got = read_openai(chat(oai, "[[truncated]]"))
    assert got["text"] == "Hel" and got["finish"] is None and got["usage"] is None
    assert "[DONE]" not in post_chat(fake, chat_body("[[truncated]]")).text
    with ant.messages.stream(model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "[[truncated]]"}]) as s:
        msg = s.get_final_message()
    assert msg.content[0].text == "Hel" and msg.stop_reason is None
    assert "message_stop" not in post_messages(fake, messages_body("[[truncated]]")).text
    with pytest.raises((openai.APIConnectionError, openai.APIError)):
        read_openai(chat(oai, "[[truncated:abrupt]]"))


def test_abort_is_a_stop(fake, oai, ant):
    got = read_openai(chat(oai, "[[abort]]"))
    assert (got["text"], got["finish"]) == ("partial", "stop")
    with ant.messages.stream(model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "[[abort]]"}]) as s:
        assert s.get_final_message().stop_reason == "end_turn"


INBAND = [  # scenario, status, chat type, chat code
    ("error_first", 400, "invalid_request_error", "insufficient_credits"),
    ("error_first:string", 500, "server_error", "server_error"),
    ("error_first:402", 402, "invalid_request_error", "insufficient_balance"),
    ("error_first:429", 429, "rate_limit_error", "rate_limit_error"),
    ("error_first:model", 403, "permission_error", "model_not_in_plan"),
    ("error_after_text", 529, "overloaded_error", "overloaded_error"),
    ("finish_error", 502, "server_error", "server_error"),
]


@pytest.mark.parametrize("scenario, status, etype, code", INBAND, ids=[i[0] for i in INBAND])
def test_inband_errors_raise_in_the_openai_sdk(fake, oai, scenario, status, etype, code):
    with pytest.raises(openai.APIError) as e:
        read_openai(chat(oai, f"[[{scenario}]]"))
    assert e.value.body["status"] == status and e.value.body["type"] == etype and e.value.code == code
    assert e.value.message
    raw = post_chat(fake, chat_body(f"[[{scenario}]]")).text
    assert raw.endswith("\n\n") and "[DONE]" not in raw and '"finish_reason":"' not in raw


@pytest.mark.parametrize("scenario, status, etype, code", INBAND, ids=[i[0] for i in INBAND])
def test_inband_errors_raise_in_the_anthropic_sdk(fake, ant, scenario, status, etype, code):
    with pytest.raises(anthropic.APIStatusError) as e:
        with ant.messages.stream(model=CLAUDE, max_tokens=100,
                                 messages=[{"role": "user", "content": f"[[{scenario}]]"}]) as s:
            s.get_final_message()
    want = {"server_error": "api_error"}.get(etype, etype)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == want
    assert "message_stop" not in post_messages(fake, messages_body(f"[[{scenario}]]")).text


OPENAI_HTTP = [
    ("http_401", openai.AuthenticationError, 401, "unauthorized"),
    ("http_400_credits", openai.BadRequestError, 400, "insufficient_credits"),
    ("http_402", openai.APIStatusError, 402, "payment_required"),
    ("http_403_model", openai.PermissionDeniedError, 403, "model_not_in_plan"),
    ("http_403_upgrade", openai.PermissionDeniedError, 403, "upgrade_required"),
    ("http_429_window", openai.RateLimitError, 429, "rate_limited"),
    ("http_500", openai.InternalServerError, 500, "internal_server_error"),
    ("http_502_html", openai.InternalServerError, 502, None),
    ("http_529", openai.InternalServerError, 529, "overloaded"),
]


@pytest.mark.parametrize("scenario, exc, status, code", OPENAI_HTTP, ids=[i[0] for i in OPENAI_HTTP])
def test_http_errors_raise_openai_classes(fake, oai, scenario, exc, status, code):
    with pytest.raises(exc) as e:
        chat(oai, f"[[{scenario}]]", model="gpt-5.4")
    assert e.value.status_code == status and e.value.code == code
    if scenario == "http_403_model":
        assert e.value.body["message"].startswith("MODEL_NOT_IN_PLAN: gpt-5.4 is not included in your plan")
    if scenario == "http_429_window":
        assert e.value.body["message"] == "You've reached your 5-hour usage limit. Resets in 2m."
    if scenario == "http_502_html":
        assert e.value.response.text == "<html><body>Bad gateway</body></html>"
    elif scenario != "http_402":
        assert e.value.body["param"] is None


ANTHROPIC_HTTP = [
    ("http_401", anthropic.AuthenticationError, "authentication_error"),
    ("http_400_validation", anthropic.BadRequestError, "invalid_request_error"),
    ("http_402", anthropic.APIStatusError, "invalid_request_error"),
    ("http_403_model", anthropic.PermissionDeniedError, "permission_error"),
    ("http_429_window", anthropic.RateLimitError, "rate_limit_error"),
    ("http_429_throttle", anthropic.RateLimitError, "rate_limit_error"),
    ("http_500", anthropic.InternalServerError, "api_error"),
    ("http_529", anthropic.InternalServerError, "overloaded_error"),
]


@pytest.mark.parametrize("scenario, exc, etype", ANTHROPIC_HTTP, ids=[i[0] for i in ANTHROPIC_HTTP])
def test_http_errors_raise_anthropic_classes(fake, ant, scenario, exc, etype):
    with pytest.raises(exc) as e:
        ant.messages.create(model=CLAUDE, max_tokens=100, stream=True,
                            messages=[{"role": "user", "content": f"[[{scenario}]]"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == etype
    if scenario == "http_403_model":
        assert e.value.body["error"]["message"].startswith(f"MODEL_NOT_IN_PLAN: {CLAUDE} is not included")


def test_http_502_html_stays_html_on_messages(fake):
    resp = post_messages(fake, messages_body("[[http_502_html]]"))
    assert resp.status_code == 502 and resp.headers["Content-Type"].startswith("text/html")


def test_disconnect_and_silence_on_provider_routes(fake):
    resp = post_chat(fake, chat_body("[[endless:5]]"), stream=True)
    next(resp.iter_content(64))
    resp.close()
    assert fake.wait_for_disconnect("endless")
    started = time.monotonic()
    resp = post_messages(fake, messages_body("[[silence:0.3]]"))
    assert time.monotonic() - started >= 0.3 and "message_stop" in resp.text
