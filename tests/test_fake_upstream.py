"""Self-test of tests/fake_upstream.py.

Why: every gateway test trusts the fake to speak the Command Code protocol
(docs/protocol.md §3–§7) and to catch bad requests.  If the fake silently sent
whole lines, or accepted envelopes the real server rejects, the gateway tests would pass for the
wrong reasons.  These tests talk to the fake over real HTTP with ``requests`` and check the wire:
chunk boundaries, NDJSON content, HTTP error bodies, request validation and disconnect recording.
"""
from __future__ import annotations

import copy
import json
import socket
import time
import uuid

import pytest
import requests

try:  # works whether or not tests/ is a package
    from tests import fake_upstream as fu
except ImportError:  # pragma: no cover - depends on how pytest sets sys.path
    import fake_upstream as fu

FakeUpstream = fu.FakeUpstream


@pytest.fixture(scope="module")
def server():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture()
def fake(server):
    server.reset()
    return server


def valid_headers(thread_id: str) -> dict:
    """The headers the CLI sends (docs/protocol.md §3.1 / §4.5)."""
    return {
        "Authorization": "Bearer user_test",
        "Content-Type": "application/json",
        "User-Agent": "cli",
        "x-command-code-version": "1.64.0",
        "x-cli-environment": "production",
        "x-session-id": thread_id,
        "x-project-slug": "home-ada-proj",
        "x-taste-learning": "false",
    }


def valid_body(text: str = "hi", thread_id: str | None = None) -> dict:
    """A minimal valid envelope (docs/protocol.md §4.1/§4.2) whose last user message is ``text``."""
    return {
        "config": {"workingDir": "/", "date": "2026-09-23", "environment": "linux", "structure": [],
                   "isGitRepo": False, "currentBranch": "", "mainBranch": "", "gitStatus": "",
                   "recentCommits": []},
        "memory": None, "taste": None, "skills": None,
        "permissionMode": "standard",
        "threadId": thread_id or str(uuid.uuid4()),
        "params": {
            "model": "deepseek/deepseek-v4-flash",
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
            "tools": [],
            "system": "You are a helpful assistant.",
            "max_tokens": 64000,
            "stream": True,
        },
    }


# The complete docs/protocol.md §4.5 example (image, reasoning, tool call + result, system array, reasoning_effort).
EXAMPLE_4_5 = {
    "config": {"workingDir": "/home/ada/proj", "date": "2026-09-23", "environment": "linux",
               "structure": ["README.md", "src"], "isGitRepo": False, "currentBranch": "",
               "mainBranch": "", "gitStatus": "", "recentCommits": []},
    "memory": None, "taste": None, "skills": None,
    "permissionMode": "standard",
    "threadId": "6f1c2a9e-3b7d-4c1e-9a55-0d2f8e7b4c11",
    "params": {
        "model": "deepseek/deepseek-v4-flash",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Read a.txt"},
                {"type": "image", "image": "data:image/png;base64,iVBORw0KGgo=", "mimeType": "image/png"}]},
            {"role": "assistant", "content": [
                {"type": "reasoning", "text": "I should read it"},
                {"type": "text", "text": "Reading."},
                {"type": "tool-call", "toolCallId": "call_1", "toolName": "read_file",
                 "input": {"file_path": "a.txt"}}]},
            {"role": "tool", "content": [
                {"type": "tool-result", "toolCallId": "call_1", "toolName": "read_file",
                 "output": {"type": "text", "value": "hello\nworld"}}]},
            {"role": "user", "content": [{"type": "text", "text": "Now summarize."}]},
        ],
        "tools": [{"name": "read_file", "description": "Read a file",
                   "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}},
                                    "required": ["file_path"]}}],
        "system": [{"type": "text", "text": "You are X.\n", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "<instructions>..</instructions>"}],
        "max_tokens": 64000,
        "stream": True,
        "reasoning_effort": "high",
    },
}


def post(fake, body, headers=None, **kw):
    body_thread = body.get("threadId", "") if isinstance(body, dict) else ""
    hdrs = valid_headers(body_thread) if headers is None else headers
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return requests.post(fake.url + "/alpha/generate", data=data, headers=hdrs, stream=True, timeout=10, **kw)


def read_stream(resp):
    """(list of HTTP chunks as received, list of parsed NDJSON events)."""
    chunks = [c for c in resp.iter_content(chunk_size=None) if c]
    events = [json.loads(line) for line in b"".join(chunks).decode("utf-8").split("\n") if line.strip()]
    return chunks, events


def text_of(events):
    return "".join(e["text"] for e in events if e.get("type") == "text-delta")


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------

def test_text_is_transcript_a_split_into_small_chunks(fake):
    resp = post(fake, valid_body("hello"))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers.get("lb-request-id")
    chunks, events = read_stream(resp)
    assert len(chunks) > 20 and max(map(len, chunks)) <= 7
    assert any(not c.endswith(b"\n") and b"\n" not in c for c in chunks)  # lines really are split
    assert [e["type"] for e in events] == ["start", "start-step", "text-start", "text-delta", "text-delta",
                                           "text-end", "finish-step", "finish"]
    assert text_of(events) == "Hello world"
    assert events[-1] == {"type": "finish", "finishReason": "stop", "rawFinishReason": "stop",
                          "totalUsage": fu.USAGE_A}
    assert fu.USAGE["text"] == {"input": 1200, "cache_read": 1024, "cache_write": 0, "output": 3,
                                "reasoning": 0, "total": 1203}
    assert fake.violations == []
    assert len(fake.requests) == 1 and fake.requests[0]["scenario"] == "text"
    assert fake.requests[0]["headers"]["user-agent"] == "cli"
    assert len(fake.first_byte_at) == 1 and fake.first_byte_at[0] >= fake.requests[0]["received_at"]


def test_fast_sends_whole_lines(fake):
    chunks, events = read_stream(post(fake, valid_body("[[fast]] go")))
    assert all(c.endswith(b"\n") for c in chunks)
    assert text_of(events) == "Hello world" and events[-1]["type"] == "finish"


def test_unicode_cuts_utf8_sequences(fake):
    chunks, events = read_stream(post(fake, valid_body("[[unicode]]")))
    assert max(map(len, chunks)) <= 3
    broken = 0
    for c in chunks:
        try:
            c.decode("utf-8")
        except UnicodeDecodeError:
            broken += 1
    assert broken > 0
    assert text_of(events) == fu.UNICODE_TEXT == "héllo wörld — 你好 🌍🚀"
    assert sum(e["type"] == "text-delta" for e in events) > 1


def test_tool_call_is_transcript_b(fake):
    _, events = read_stream(post(fake, valid_body("[[tool_call]] read it")))
    calls = [e for e in events if e["type"] == "tool-call"]
    assert calls == [{"type": "tool-call", "toolCallId": "call_1", "toolName": "read_file",
                      "input": {"file_path": "a.txt"}}]
    assert events[-1]["finishReason"] == "tool-calls" and events[-1]["rawFinishReason"] == "tool_calls"


@pytest.mark.parametrize("arg, error", [
    (None, {"message": "Insufficient credits", "statusCode": 400, "isRetryable": False}),
    ("string", "Upstream overloaded"),
    ("402", {"type": "server_error", "message": "Insufficient Balance", "statusCode": 402}),
    ("429", {"message": '429 {"error":{"type":"rate_limit_error","message":"slow down"}}'}),
    ("model", {"message": "MODEL_NOT_IN_PLAN: claude-opus-5 is not included in your plan", "statusCode": 403}),
])
def test_error_first(fake, arg, error):
    marker = "[[error_first]]" if arg is None else f"[[error_first:{arg}]]"
    resp = post(fake, valid_body(marker))
    assert resp.status_code == 200
    _, events = read_stream(resp)
    assert events == [{"type": "start"}, {"type": "error", "error": error}]
    assert fake.violations == []


def test_truncated_has_no_finish(fake):
    _, events = read_stream(post(fake, valid_body("[[truncated]]")))
    assert text_of(events) == "Hel"
    assert all(e["type"] not in ("finish", "abort") for e in events)


def test_garbage_lines_are_on_the_wire(fake):
    resp = post(fake, valid_body("[[garbage]]"))
    raw = b"".join(resp.iter_content(chunk_size=None)).decode()
    lines = raw.split("\n")
    assert "not json" in lines and "data: [DONE]" in lines and "" in lines
    assert any(line.startswith('data: {"type": "text-delta"') for line in lines)
    assert json.loads([line for line in lines if line.strip()][-1])["type"] == "finish"


def test_pause_turn_alternates_per_thread(fake):
    body = valid_body("[[pause_turn]]")
    _, first = read_stream(post(fake, body))
    _, second = read_stream(post(fake, body))
    assert text_of(first) == "Part one. " and first[-1]["rawFinishReason"] == "pause_turn"
    assert text_of(second) == "Part two." and second[-1]["finishReason"] == "stop"
    assert fake.violations == []


def test_echo_and_image(fake):
    _, events = read_stream(post(fake, valid_body("  [[echo]] what reached upstream  ")))
    assert text_of(events) == "what reached upstream"
    body = valid_body("[[image]]")
    body["params"]["messages"][0]["content"] += [
        {"type": "image", "image": "data:image/png;base64,iVBORw0KGgo=", "mimeType": "image/png"}] * 2
    _, events = read_stream(post(fake, body))
    assert text_of(events) == "images=2"
    assert fake.violations == []


# ---------------------------------------------------------------------------------------------
# HTTP errors before the stream
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario, status, code, needle", [
    ("http_401", 401, "UNAUTHORIZED", "Invalid 'Authorization' header"),
    ("http_400_credits", 400, None, "Insufficient credits"),
    ("http_402", 402, None, "Insufficient Balance"),
    ("http_403_model", 403, "MODEL_NOT_IN_PLAN", "MODEL_NOT_IN_PLAN: deepseek/deepseek-v4-flash"),
    ("http_403_upgrade", 403, "upgrade_required", ""),
    ("http_403_premium", 403, None, "PREMIUM_CREDITS_EXHAUSTED:"),
    ("http_429_window", 429, "RATE_LIMITED", ""),
    ("http_429_throttle", 429, "RATE_LIMITED", "Rate-limited by the upstream"),
    ("http_500", 500, None, ""),
    ("http_529", 529, None, ""),
    ("http_400_validation", 400, None, "Too big: expected number to be <=200000"),
])
def test_http_errors(fake, scenario, status, code, needle):
    resp = post(fake, valid_body(f"[[{scenario}]]"))
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert body["success"] is False and body["error"]["status"] == status
    assert needle in body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    if scenario == "http_429_window":
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["rateLimit"]["window"] == "fiveHour"
        assert 100 <= body["error"]["rateLimit"]["reset"] - time.time() <= 121
    if scenario == "http_429_throttle":
        assert "rateLimit" not in body["error"]
    if scenario == "http_529":
        assert body["error"]["type"] == "overloaded_error"
    assert fake.violations == []


def test_http_502_html(fake):
    resp = post(fake, valid_body("[[http_502_html]]"))
    assert resp.status_code == 502
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.text == "<html><body>Bad gateway</body></html>"


def test_unknown_scenario_and_unknown_path(fake):
    resp = post(fake, valid_body("[[no_such_scenario]]"))
    assert resp.status_code == 400
    assert len(fake.violations) == 1 and "no_such_scenario" in fake.violations[0]
    resp = requests.get(fake.url + "/health", timeout=5)
    assert resp.status_code == 404 and resp.json()["success"] is False


# ---------------------------------------------------------------------------------------------
# Request validation
# ---------------------------------------------------------------------------------------------

def test_valid_envelope_has_no_violations(fake):
    assert fu.validate_body(EXAMPLE_4_5) == []
    resp = post(fake, EXAMPLE_4_5)
    read_stream(resp)
    assert fake.violations == []
    # A plain-string user content is tolerated too.
    body = valid_body()
    body["params"]["messages"] = [{"role": "user", "content": "hi"}]
    del body["threadId"]
    headers = valid_headers("")
    del headers["x-session-id"]
    read_stream(post(fake, body, headers))
    assert fake.violations == []


def _violations_for(fake, body=None, headers=None):
    body = body if body is not None else valid_body()
    read_stream(post(fake, body, headers))
    return list(fake.violations)


def test_missing_cli_user_agent_is_a_violation(fake):
    body = valid_body()
    headers = valid_headers(body["threadId"])
    del headers["User-Agent"]          # requests then sends python-requests/x.y
    v = _violations_for(fake, body, headers)
    assert any("'user-agent' must be 'cli'" in m for m in v), v


def test_tool_search_tool_is_a_violation(fake):
    body = valid_body()
    body["params"]["tools"] = [{"name": "tool_search", "description": "d", "input_schema": {"type": "object"}}]
    v = _violations_for(fake, body)
    assert len(v) == 1 and "reserved" in v[0], v


def test_unanswered_tool_call_is_a_violation(fake):
    body = copy.deepcopy(EXAMPLE_4_5)
    del body["params"]["messages"][2]  # drop the tool-result; now assistant -> user
    v = _violations_for(fake, body)
    assert any("not answered" in m and "call_1" in m for m in v), v


def test_bad_thread_id_is_a_violation(fake):
    body = valid_body(thread_id=str(uuid.uuid1()))   # version 1, not 4
    v = _violations_for(fake, body)
    assert any("threadId must be an RFC 4122 UUID v4" in m for m in v), v


@pytest.mark.parametrize("mutate, needle", [
    (lambda b, h: h.update({"x-api-key": "leak"}), "unexpected header 'x-api-key'"),
    (lambda b, h: h.update({"x-session-id": str(uuid.uuid4())}), "x-session-id"),
    (lambda b, h: b["params"].update(stream=False), "params.stream must be true"),
    (lambda b, h: b["params"].update(max_tokens=300000), "params.max_tokens"),
    (lambda b, h: b["params"].update(system=""), "params.system"),
    (lambda b, h: b["params"].update(top_p=1), "unexpected key 'top_p'"),
    (lambda b, h: b.update(memory=""), "body.memory must be null"),
    (lambda b, h: b["params"]["messages"][0]["content"].append({"type": "text", "text": ""}), "empty text part"),
    (lambda b, h: b["params"]["messages"].append({"role": "user", "content": [{"type": "text", "text": "x"}]}),
     "two consecutive 'user' messages"),
    (lambda b, h: b["params"]["messages"].insert(0, {"role": "tool", "content": [
        {"type": "tool-result", "toolCallId": "nope", "toolName": "f", "output": {"type": "text", "value": ""}}]}),
     "never appeared"),
])
def test_other_violations(fake, mutate, needle):
    body = valid_body()
    headers = valid_headers(body["threadId"])
    mutate(body, headers)
    v = _violations_for(fake, body, headers)
    assert any(needle in m for m in v), v


def test_trailing_assistant_with_unanswered_call_is_a_violation():
    body = copy.deepcopy(EXAMPLE_4_5)
    body["params"]["messages"] = body["params"]["messages"][:2]
    v = fu.validate_body(body)
    assert any("never answered" in m for m in v) and any("last message" in m for m in v), v


def test_non_strict_mode_skips_validation():
    with FakeUpstream(strict=False) as fake:
        read_stream(requests.post(fake.url + "/alpha/generate", json=valid_body(), stream=True, timeout=5))
        assert fake.violations == [] and len(fake.requests) == 1


# ---------------------------------------------------------------------------------------------
# Disconnects
# ---------------------------------------------------------------------------------------------

def test_endless_records_disconnect(fake):
    body = valid_body("[[endless]]")
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in valid_headers(body["threadId"]).items())
    sock = socket.create_connection((fake.host, fake.port), timeout=5)
    sock.sendall(f"POST /alpha/generate HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(data)}\r\n\r\n".encode()
                 + data)
    received = b""
    while received.count(b"tick") < 3:
        received += sock.recv(4096)
    assert b" 200 " in received.split(b"\r\n", 1)[0]
    sock.close()
    assert fake.wait_for_disconnect("endless", timeout=3)
    assert fake.disconnects == ["endless"]
    assert fake.violations == []
