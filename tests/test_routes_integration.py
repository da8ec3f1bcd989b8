"""Every client surface on every upstream route, end to end, with the official SDKs.

Three gunicorns (2 gthread workers each) in front of the same fake upstream:

* ``gateway`` (conftest): ``mode: cli``;
* ``provider_gateway``: ``mode: provider`` with a Pro key;
* ``auto_gateway``: ``mode: auto``, ``client_keys: passthrough``, ``plan: auto``, model discovery
  on -- callers send their own Command Code keys, so each test picks the plan it needs (a fresh
  Go key per test starts with no remembered route).

The matrix below runs the same conversations through each (surface, route) pair: the OpenAI SDK
and the Anthropic SDK, against the CLI route, the Provider API's chat endpoint (non-Claude
models), its messages endpoint (Claude models), and ``auto`` landing on either.  The fake checks
every upstream request against the wire rules of its endpoint (no violations allowed).
"""
from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

import anthropic
import openai
import pytest
import requests
import yaml

from gateway import keys
from tests.conftest import LOCAL_KEY, start_gateway as _start
from tests.fake_upstream import GO_KEY, MAX_KEY, NEW_PROVIDER_MODEL, PRO_KEY, USAGE

GENERATE = "/alpha/generate"
CHAT = "/provider/v1/chat/completions"
MESSAGES = "/provider/v1/messages"
FLASH = "deepseek/deepseek-v4-flash"
CLAUDE = "claude-sonnet-5"
READ_FILE = {"name": "read_file", "description": "Read a file",
             "schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}


@pytest.fixture(scope="session")
def auto_gateway(fake_server, tmp_path_factory):
    server = _start(fake_server, tmp_path_factory, "auto",
                    commandcode={"mode": "auto", "api_key": PRO_KEY}, client_keys="passthrough",
                    plan="auto", discover_models=True, include_models=["claude-haiku"])
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert "user_" not in log, "a Command Code key reached the log"


def fresh_go_key(fake) -> str:
    """A Go-plan key no gateway has seen: its route is not remembered anywhere yet."""
    key = f"user_go_{uuid.uuid4().hex}"
    fake.plans[key] = "individual-go"
    return key


#: route name -> (gateway fixture, model, key: "local" | "pro" | "go", upstream path)
ROUTES = {
    "cli": ("gateway", FLASH, "local", GENERATE),
    "cli-claude": ("gateway", CLAUDE, "local", GENERATE),
    "provider-chat": ("provider_gateway", FLASH, "local", CHAT),
    "provider-messages": ("provider_gateway", CLAUDE, "local", MESSAGES),
    "auto-provider": ("auto_gateway", FLASH, "pro", CHAT),
    "auto-provider-claude": ("auto_gateway", CLAUDE, "local", MESSAGES),
    "auto-cli": ("auto_gateway", CLAUDE, "go", GENERATE),
}


class Target:
    """One (surface, route) pair: an SDK client and the model to ask for."""

    def __init__(self, surface, server, model, key, path, fake):
        self.surface, self.server, self.model, self.key, self.path, self.fake = \
            surface, server, model, key, path, fake
        if surface == "openai":
            self.client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0,
                                        timeout=30)
        else:
            self.client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0,
                                              timeout=30)

    def upstream(self) -> list[dict]:
        """The model calls the fake received, all on this route's path (checked).

        A fresh Go key's first request is tried once on the Provider API (auto); that one
        attempt is allowed and left out.
        """
        calls = [r for r in self.fake.requests if r["method"] == "POST"]
        if self.key.startswith("user_go_"):
            probes = [r for r in calls if r["path"] != GENERATE]
            assert len(probes) <= 1, [r["path"] for r in probes]
            calls = [r for r in calls if r["path"] == GENERATE]
        assert calls and {r["path"] for r in calls} == {self.path}, [r["path"] for r in calls]
        return calls

    # -- one turn, either surface --------------------------------------------------------------

    def ask(self, messages, stream: bool, tools=False, **extra) -> dict:
        """Text, reasoning, tool calls and usage of one answer, in a surface-neutral dict."""
        if self.surface == "openai":
            return self._ask_openai(messages, stream, tools, **extra)
        return self._ask_anthropic(messages, stream, tools, **extra)

    def _ask_openai(self, messages, stream, tools, **extra):
        kw = dict(model=self.model, messages=messages, **extra)
        if tools:
            kw["tools"] = [{"type": "function", "function": {
                "name": READ_FILE["name"], "description": READ_FILE["description"],
                "parameters": READ_FILE["schema"]}}]
        if not stream:
            r = self.client.chat.completions.create(**kw)
            m = r.choices[0].message
            return {"text": m.content or "", "reasoning": getattr(m, "reasoning_content", None) or "",
                    "calls": [(c.id, c.function.name, json.loads(c.function.arguments))
                              for c in m.tool_calls or []],
                    "finish": r.choices[0].finish_reason, "input": r.usage.prompt_tokens,
                    "output": r.usage.completion_tokens,
                    "cache_read": r.usage.prompt_tokens_details.cached_tokens, "message": m}
        text, reasoning, calls, finish, usage = [], [], {}, None, None
        for chunk in self.client.chat.completions.create(stream=True, **kw):
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content:
                    text.append(c.delta.content)
                if getattr(c.delta, "reasoning_content", None):
                    reasoning.append(c.delta.reasoning_content)
                for tc in c.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, [tc.id, tc.function.name, ""])
                    entry[2] += tc.function.arguments or ""
                finish = c.finish_reason or finish
        assert usage is not None, "the stream ended without its usage chunk"
        return {"text": "".join(text), "reasoning": "".join(reasoning),
                "calls": [(i, n, json.loads(a)) for i, n, a in calls.values()], "finish": finish,
                "input": usage.prompt_tokens, "output": usage.completion_tokens,
                "cache_read": usage.prompt_tokens_details.cached_tokens}

    def _ask_anthropic(self, messages, stream, tools, **extra):
        kw = dict(model=self.model, max_tokens=1024, messages=messages, **extra)
        if tools:
            kw["tools"] = [{"name": READ_FILE["name"], "description": READ_FILE["description"],
                            "input_schema": READ_FILE["schema"]}]
        if stream:
            with self.client.messages.stream(**kw) as s:
                for _ in s:
                    pass
                m = s.get_final_message()
        else:
            m = self.client.messages.create(**kw)
        u = m.usage
        return {"text": "".join(b.text for b in m.content if b.type == "text"),
                "reasoning": "".join(b.thinking for b in m.content if b.type == "thinking"),
                "calls": [(b.id, b.name, b.input) for b in m.content if b.type == "tool_use"],
                "finish": m.stop_reason,
                "input": u.input_tokens + (u.cache_read_input_tokens or 0)
                + (u.cache_creation_input_tokens or 0),
                "output": u.output_tokens, "cache_read": u.cache_read_input_tokens or 0,
                "message": m}

    def tool_turns(self, first: dict, result: str, follow_up: str) -> list:
        """The history after ``first`` asked for a tool: the call, its result, a new question."""
        if self.surface == "openai":
            calls = [{"id": cid, "type": "function",
                      "function": {"name": name, "arguments": json.dumps(args)}}
                     for cid, name, args in first["calls"]]
            return [{"role": "assistant", "content": first["text"] or None, "tool_calls": calls},
                    {"role": "tool", "tool_call_id": first["calls"][0][0], "content": result},
                    {"role": "user", "content": follow_up}]
        return [{"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                  for b in first["message"].content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": first["calls"][0][0], "content": result},
                    {"type": "text", "text": follow_up}]}]

    def errors(self):
        return (openai if self.surface == "openai" else anthropic)


@pytest.fixture(params=[(s, r) for r in ROUTES for s in ("openai", "anthropic")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def target(request, fake):
    surface, route = request.param
    fixture, model, key, path = ROUTES[route]
    server = request.getfixturevalue(fixture)
    key = {"local": LOCAL_KEY, "pro": PRO_KEY, "go": None}[key] or fresh_go_key(fake)
    return Target(surface, server, model, key, path, fake)


def user(text):
    return [{"role": "user", "content": text}]


# ---- the matrix --------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_text_and_usage(target, stream):
    r = target.ask(user("Say hello"), stream)
    u = USAGE["text"]
    assert r["text"] == "Hello world"
    assert r["finish"] in ("stop", "end_turn")
    assert (r["input"], r["output"], r["cache_read"]) == (u["input"], u["output"], u["cache_read"])
    target.upstream()


def test_reasoning_is_relayed(target):
    r = target.ask(user("[[reasoning]] 2+2?"), True)
    assert (r["reasoning"], r["text"]) == ("Let me think.", "4")
    assert r["output"] == USAGE["reasoning"]["output"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_tool_call_round_trip(target, stream):
    first = target.ask(user("[[tool_call]] read a.txt"), stream, tools=True)
    assert [c[1:] for c in first["calls"]] == [("read_file", {"file_path": "a.txt"})]
    assert first["finish"] in ("tool_calls", "tool_use")
    history = user("[[tool_call]] read a.txt") + target.tool_turns(first, "contents of a.txt",
                                                                     "[[echo]] thanks, done")
    second = target.ask(history, stream, tools=True)
    assert second["text"] == "thanks, done"
    calls = target.upstream()
    assert len(calls) == 2          # the fake checked the call/result pairing of the second


def test_reasoning_goes_back_in_the_next_turn(target):
    """A thinking turn sent back (Claude's with its signature) is accepted upstream."""
    if target.surface == "openai":
        first = target.ask(user("[[reasoning]] 2+2?"), False)
        history = user("[[reasoning]] 2+2?") + [
            {"role": "assistant", "content": first["text"], "reasoning_content": first["reasoning"]},
            {"role": "user", "content": "[[echo]] and 3+3?"}]
    else:
        first = target.ask(user("[[reasoning]] 2+2?"), True)
        history = user("[[reasoning]] 2+2?") + [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                              for b in first["message"].content]},
            {"role": "user", "content": "[[echo]] and 3+3?"}]
    assert target.ask(history, True)["text"] == "and 3+3?"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_an_error_before_any_output_is_an_http_error(target, stream):
    """Upstream says "Insufficient credits" first thing: a real 402, never an empty 200."""
    with pytest.raises(target.errors().APIStatusError) as info:
        target.ask(user("[[error_first]] hi"), stream)
    assert info.value.status_code == 402


def test_http_errors_are_mapped(target):
    with pytest.raises(target.errors().RateLimitError):
        target.ask(user("[[http_429_throttle]] hi"), False)
    with pytest.raises(target.errors().PermissionDeniedError) as info:
        target.ask(user("[[http_403_model]] hi"), True)
    assert "not included in your plan" in str(info.value)


def test_a_truncated_stream_is_an_error_never_a_stop(target):
    if target.surface == "openai":
        with pytest.raises(openai.APIError):
            target.ask(user("[[truncated]] hi"), True)
    else:
        with pytest.raises(anthropic.APIError):
            target.ask(user("[[truncated]] hi"), True)
    with pytest.raises(target.errors().APIStatusError) as info:
        target.ask(user("[[truncated]] hi"), False)
    assert info.value.status_code == 502


def test_unicode_split_mid_character(target):
    from tests.fake_upstream import UNICODE_TEXT
    assert target.ask(user("[[unicode]]"), True)["text"] == UNICODE_TEXT


# ---- auto --------------------------------------------------------------------------------------

def _sse_body(server, key, text, model=FLASH) -> bytes:
    r = requests.post(server.url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "stream": True,
                            "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r.content


def _by_key(fake, key: str, path_prefix: str) -> list[dict]:
    return [r for r in fake.requests if r["path"].startswith(path_prefix)
            and r["headers"].get("authorization") == f"Bearer {key}"]


def test_auto_tries_the_provider_api_once_per_key_across_workers(auto_gateway, fake):
    """20 concurrent first requests of a Go key over 2 workers: one Provider API attempt in
    all, then every request on the CLI route; no client sees a byte of the failed attempt."""
    key = fresh_go_key(fake)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        bodies = list(pool.map(lambda i: _sse_body(auto_gateway, key, f"hi {i}"), range(20)))
    for body in bodies:
        events = [json.loads(line[6:]) for line in body.decode().split("\n\n")
                  if line.startswith("data: {")]
        assert not any("error" in e for e in events), body
        assert "".join(c["delta"].get("content") or "" for e in events for c in e["choices"]) \
            == "Hello world"
        # nothing but the CLI answer: keep-alive comments at most (if the wait was long)
        frames = [f for f in body.split(b"\n\n") if f and f != b": keep-alive"]
        assert all(f.startswith(b"data: ") for f in frames) and frames[-1] == b"data: [DONE]", body
    assert len(_by_key(fake, key, "/provider/v1/chat")) == 1
    assert len(_by_key(fake, key, GENERATE)) == 20
    # and it stays remembered: later requests never try the Provider API again
    for i in range(4):
        _sse_body(auto_gateway, key, f"again {i}")
    assert len(_by_key(fake, key, "/provider/v1/chat")) == 1
    routes = json.loads((auto_gateway.folder / "key_routes.json").read_text())
    assert routes[keys.label(key)][0] == "cli" and key not in json.dumps(routes)


def test_auto_keeps_a_provider_key_on_the_provider_api(auto_gateway, fake):
    for _ in range(3):
        _sse_body(auto_gateway, MAX_KEY, "hi", model=CLAUDE)
    assert len(_by_key(fake, MAX_KEY, MESSAGES)) == 3
    assert _by_key(fake, MAX_KEY, GENERATE) == []


def test_provider_mode_with_a_go_key_says_to_use_auto_or_cli(provider_gateway, fake):
    fake.plans[PRO_KEY] = "individual-go"       # the gateway's own key, downgraded
    client = openai.OpenAI(base_url=provider_gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model=FLASH, messages=user("hi"))
    assert info.value.body["code"] == "upgrade_required"
    assert "commandcode.mode" in info.value.body["message"]
    assert [r["path"] for r in fake.requests] == [CHAT]


def test_provider_requests_carry_no_cli_headers(provider_gateway, fake):
    client = anthropic.Anthropic(base_url=provider_gateway.url, api_key=LOCAL_KEY, max_retries=0)
    client.messages.create(model=CLAUDE, max_tokens=100, messages=user("hi"))
    headers = fake.requests[-1]["headers"]
    assert headers["authorization"] == f"Bearer {PRO_KEY}"
    assert not any(h.startswith(("x-command-code", "x-cli", "x-session", "x-project", "x-taste"))
                   for h in headers)


# ---- passthrough keys --------------------------------------------------------------------------

def test_passthrough_key_is_used_upstream_and_counted_under_a_label(auto_gateway, fake):
    key = f"user_pro_{uuid.uuid4().hex}"
    client = openai.OpenAI(base_url=auto_gateway.url + "/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(model=FLASH, messages=user("hi")).choices[0] \
        .message.content == "Hello world"
    assert fake.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
    r = requests.get(auto_gateway.url + "/usage", headers={"Authorization": f"Bearer {key}"},
                     timeout=10)
    assert r.status_code == 200
    assert key not in r.text
    bucket = r.json()["keys"][keys.label(key)]
    assert bucket["total_requests"] == 1 and bucket["prompt_tokens"] == USAGE["text"]["input"]


def test_passthrough_refuses_keys_that_are_not_command_code_keys(auto_gateway, fake):
    for key in ("sk-random", "user_", "", "Bearer"):
        r = requests.get(auto_gateway.url + "/v1/models", timeout=10,
                         headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401
    assert fake.requests == [] or all(r["method"] == "GET" for r in fake.requests)


def test_a_rejected_passthrough_key_is_a_401_in_the_callers_envelope(auto_gateway, fake):
    client = anthropic.Anthropic(base_url=auto_gateway.url, api_key="user_invalid_key",
                                 max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=FLASH, max_tokens=10, messages=user("hi"))
    assert "user_invalid_key" not in str(info.value.body)


def test_without_passthrough_a_command_code_key_is_not_a_local_key(gateway, fake):
    r = requests.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {PRO_KEY}"},
                     timeout=10)
    assert r.status_code == 401


# ---- models: plan filter and discovery ---------------------------------------------------------

def _model_ids(server, key) -> set[str]:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    return {m.id for m in client.models.list()}


def test_models_are_filtered_by_the_callers_plan(auto_gateway, fake):
    go = _model_ids(auto_gateway, GO_KEY)
    assert FLASH in go and "moonshotai/Kimi-K3" in go
    assert CLAUDE not in go and "gpt-6-astra" not in go and "google/gemini-3.8-flash" not in go
    assert "claude-haiku-4-5-20251001" in go            # include_models: ["claude-haiku"]
    pro = _model_ids(auto_gateway, PRO_KEY)
    assert CLAUDE in pro and "google/gemini-3.8-flash" in pro and "claude-opus-5" not in pro
    assert "claude-opus-5" in _model_ids(auto_gateway, MAX_KEY)


def test_extra_credits_lift_the_plan_filter(auto_gateway, fake):
    key = fresh_go_key(fake)
    fake.credits[key] = {"credits": {"monthlyCredits": 1, "purchasedCredits": 5, "freeCredits": 0,
                                     "planId": "individual-go"}}
    assert "claude-opus-5" in _model_ids(auto_gateway, key)


def test_a_billing_failure_lists_every_model(auto_gateway, fake):
    fake.billing_status = 500
    key = fresh_go_key(fake)        # nothing cached for it
    assert "claude-opus-5" in _model_ids(auto_gateway, key)


def test_model_list_merges_the_provider_api_list(auto_gateway, fake):
    client = openai.OpenAI(base_url=auto_gateway.url + "/v1", api_key=PRO_KEY, max_retries=0)
    deadline = time.monotonic() + 10
    while True:     # each worker fetches the list in the background after it starts
        models = {m.id: m for m in client.models.list()}
        if NEW_PROVIDER_MODEL in models or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    new = models[NEW_PROVIDER_MODEL].model_dump()
    assert (new["context_length"], new["max_output_tokens"], new["vision"], new["min_plan"]) == \
        (500000, 65536, None, None)
    flash = models[FLASH].model_dump()
    assert (flash["max_output_tokens"], flash["vision"], flash["min_plan"]) == (384000, False, "go")
    assert client.models.retrieve(NEW_PROVIDER_MODEL).id == NEW_PROVIDER_MODEL
    # and a model only the list knows can be called
    r = client.chat.completions.create(model=NEW_PROVIDER_MODEL, messages=user("hi"))
    assert r.choices[0].message.content == "Hello world" and r.model == NEW_PROVIDER_MODEL
    assert fake.requests[-1]["body"]["model"] == NEW_PROVIDER_MODEL


# ---- quota -------------------------------------------------------------------------------------

def test_usage_shows_the_callers_plan_and_windows(auto_gateway, fake):
    key = fresh_go_key(fake)
    r = requests.get(auto_gateway.url + "/usage", headers={"x-api-key": key}, timeout=10)
    up = r.json()["upstream"]
    assert up["plan"] == "individual-go"
    assert up["credits"] == {"monthly": 7.42, "purchased": 0, "free": 0}
    five, week = up["windows"]["five_hour"], up["windows"]["weekly"]
    assert (five["used"], five["cap"], week["used"], week["cap"]) == (0.8, 2.0, 3.1, 5.0)
    assert five["resets_at"].endswith("Z") and five["resets_at"] < week["resets_at"]
    assert key not in r.text


def test_a_billing_failure_never_breaks_usage(auto_gateway, fake):
    fake.billing_status = 500
    key = fresh_go_key(fake)
    r = requests.get(auto_gateway.url + "/usage", headers={"x-api-key": key}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert "error" in body["upstream"] and "total_requests" in body


def test_prompt_cache_breakpoints_reach_claude_on_the_provider_api(provider_gateway, fake):
    """Claude Code marks what to cache; on the Provider API Claude must see the same marks."""
    eph, hour = {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}
    client = anthropic.Anthropic(base_url=provider_gateway.url, api_key=LOCAL_KEY, max_retries=0)
    client.messages.create(
        model=CLAUDE, max_tokens=100,
        system=[{"type": "text", "text": "You are terse.", "cache_control": hour}],
        tools=[{"name": "read_file", "description": "Read", "cache_control": eph,
                "input_schema": READ_FILE["schema"]}],
        messages=[{"role": "user", "content": "read a.txt"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
                                                     "name": "read_file", "input": {}}]},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": "t1", "content": "abc",
                       "cache_control": eph},
                      {"type": "text", "text": "summarise", "cache_control": eph}]}])
    body = fake.requests[-1]["body"]
    assert fake.requests[-1]["path"] == MESSAGES
    assert body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": hour}]
    assert body["tools"][0]["cache_control"] == eph
    last = body["messages"][-1]["content"]
    assert [b.get("cache_control") for b in last] == [eph, eph]


# ---- what Claude Code 2.1 sends, on every route --------------------------------------------------

@pytest.fixture(params=list(ROUTES), ids=lambda r: f"anthropic-{r}")
def anthropic_target(request, fake):
    fixture, model, key, path = ROUTES[request.param]
    key = {"local": LOCAL_KEY, "pro": PRO_KEY, "go": None}[key] or fresh_go_key(fake)
    return Target("anthropic", request.getfixturevalue(fixture), model, key, path, fake)


def _upstream_messages(target) -> str:
    body = target.upstream()[-1]["body"]
    return json.dumps(body["params"]["messages"] if target.path == GENERATE else body["messages"])


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_mid_conversation_system_turns_reach_the_model_in_order(anthropic_target, stream):
    """Claude Code's ``mid-conversation-system`` beta puts ``role: "system"`` turns anywhere in
    ``messages``, a trailing one included; each reaches upstream where it stood."""
    t = anthropic_target
    history = [{"role": "user", "content": "USER-ONE"},
               {"role": "system", "content": "NOTE-A"},
               {"role": "assistant", "content": "ASSISTANT-ONE"},
               {"role": "system", "content": [{"type": "text", "text": "NOTE-B",
                                               "cache_control": {"type": "ephemeral", "scope": "global"}}]},
               {"role": "user", "content": "[[echo]] USER-TWO"},
               {"role": "system", "content": "NOTE-C"}]
    r = t.ask(history, stream)      # echo: the last user turn as upstream got it
    assert r["text"] == ("<system-reminder>\nNOTE-B\n</system-reminder>\n USER-TWO\n"
                         "<system-reminder>\nNOTE-C\n</system-reminder>")
    sent = _upstream_messages(t)
    marks = ["USER-ONE", "NOTE-A", "ASSISTANT-ONE", "NOTE-B", "USER-TWO", "NOTE-C"]
    positions = [sent.find(m) for m in marks]
    assert -1 not in positions and positions == sorted(positions), (positions, sent)
    assert "<system-reminder>" in sent


def test_a_system_turn_between_a_tool_call_and_its_result(anthropic_target):
    t = anthropic_target
    first = t.ask(user("[[tool_call]] read a.txt"), True, tools=True)
    history = user("[[tool_call]] read a.txt") + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first["message"].content]},
        {"role": "system", "content": "NOTE-AFTER-CALL"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first["calls"][0][0],
                                      "content": "contents"},
                                     {"type": "text", "text": "[[echo]] done"}]}]
    text = t.ask(history, True, tools=True)["text"]        # the fake checked the pairing too
    assert text == "<system-reminder>\nNOTE-AFTER-CALL\n</system-reminder>\n done"


def _sent_effort(target):
    body = target.upstream()[-1]["body"]
    if target.path == GENERATE:
        return body["params"].get("reasoning_effort")
    if target.path == CHAT:
        return body.get("reasoning_effort")
    return (body.get("thinking") or {}).get("budget_tokens")


@pytest.mark.parametrize("effort,thinking,expect", [
    ("low", {"type": "adaptive"}, {FLASH: "high", CLAUDE: "low", "budget": 4096}),
    ("max", {"type": "adaptive", "display": "omitted"}, {FLASH: "max", CLAUDE: "max", "budget": 63999}),
    (None, {"type": "adaptive"}, {FLASH: "high", CLAUDE: "high", "budget": 32768}),
    ("max", {"type": "disabled"}, {FLASH: None, CLAUDE: None, "budget": None}),
])
def test_claude_code_effort_reaches_upstream(anthropic_target, effort, thinking, expect):
    """``--effort`` arrives as ``output_config.effort`` with adaptive thinking: it becomes the
    reasoning effort (clamped to the model's); on Claude, a thinking budget."""
    t = anthropic_target
    extra = {"thinking": thinking, "max_tokens": 64000}
    if effort:
        extra["extra_body"] = {"output_config": {"effort": effort}}
    t.client.messages.create(model=t.model, messages=user("hi"), **extra)
    want = expect["budget"] if t.path == MESSAGES else expect[t.model]
    assert _sent_effort(t) == want


def test_everything_else_claude_code_sends_is_accepted(anthropic_target):
    t = anthropic_target
    r = t.client.messages.create(
        model=t.model, max_tokens=32000, messages=user("[[echo]] ok"),
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332;"},
                {"type": "text", "text": "You are Claude Code.",
                 "cache_control": {"type": "ephemeral", "scope": "global", "ttl": "1h"}}],
        metadata={"user_id": json.dumps({"device_id": "d", "session_id": "s"})},
        extra_headers={"anthropic-beta": "claude-code-20250219,context-management-2025-06-27,"
                                         "mid-conversation-system-2026-04-07,effort-2025-11-24"},
        extra_query={"beta": "true"},
        extra_body={"context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
                    "output_config": {"effort": "medium"}, "thinking": {"type": "adaptive"}})
    assert "".join(b.text for b in r.content if b.type == "text") == "ok"
