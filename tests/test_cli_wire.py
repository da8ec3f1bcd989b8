"""The CLI route's translation, as plain functions: canonical request -> envelope, NDJSON -> events."""
from __future__ import annotations

import json
import uuid

import pytest

from gateway import errors
from gateway.canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish,
                               Image, Message, Reasoning, ReasoningDelta, SystemBlock, Text,
                               TextDelta, Tool, ToolCall, ToolCallEvent, ToolResult)
from gateway.catalog import Catalog
from gateway.normalize import MISSING_RESULT, normalize
from gateway.upstream.cli import DEFAULT_SYSTEM, Decoder, encode, thread_id, tool_wire_names
from tests.fake_upstream import validate_body

CATALOG = Catalog.load()
FLASH = CATALOG.resolve("deepseek/deepseek-v4-flash")
VISION = CATALOG.resolve("moonshotai/Kimi-K3")
GLM_FLASH = CATALOG.resolve("z-ai/glm-5.3-flash")       # max output 131072
PNG = "data:image/png;base64,iVBORw0KGgo="


def req(messages, model=FLASH, **kw) -> ChatRequest:
    return ChatRequest(model=model, requested_model=model.id, messages=messages, **kw)


def wire(r: ChatRequest) -> dict:
    body = encode(normalize(r), thread_id(r, "user_k"))
    assert validate_body(body) == [], validate_body(body)      # the fake's spec checks agree
    return body


def test_envelope_has_exactly_the_cli_fields():
    body = wire(req([Message("user", [Text("hi")])]))
    assert set(body) == {"config", "memory", "taste", "skills", "permissionMode", "threadId", "params"}
    assert body["memory"] is body["taste"] is body["skills"] is None
    assert body["permissionMode"] == "standard"
    assert uuid.UUID(body["threadId"]).version == 4
    p = body["params"]
    assert p == {"model": "deepseek/deepseek-v4-flash",
                 "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                 "tools": [], "system": DEFAULT_SYSTEM, "max_tokens": 64000, "stream": True}


def test_thread_id_is_stable_per_conversation_and_differs_across_them():
    a1 = req([Message("user", [Text("first")])])
    a2 = req([Message("user", [Text("first")]), Message("assistant", [Text("x")]),
              Message("user", [Text("second")])])
    b = req([Message("user", [Text("other")])])
    assert thread_id(a1, "k") == thread_id(a2, "k")
    assert thread_id(a1, "k") != thread_id(b, "k")
    assert thread_id(a1, "k") != thread_id(a1, "other-key")


def test_system_blocks_keep_cache_control_and_a_single_plain_block_is_a_string():
    one = wire(req([Message("user", [Text("q")])], system=[SystemBlock("Be brief.")]))
    assert one["params"]["system"] == "Be brief."
    two = wire(req([Message("user", [Text("q")])],
                   system=[SystemBlock("A", {"type": "ephemeral"}), SystemBlock("B")]))
    assert two["params"]["system"] == [
        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "B"}]
    blank = wire(req([Message("user", [Text("q")])], system=[SystemBlock("   ")]))
    assert blank["params"]["system"] == DEFAULT_SYSTEM


def test_tool_history_maps_to_ai_sdk_parts():
    body = wire(req([
        Message("user", [Text("Read a.txt"), Image(PNG, "image/png")]),
        Message("assistant", [Reasoning("I should read it"), Text("Reading."),
                              ToolCall("call_1", "read_file", {"file_path": "a.txt"})]),
        Message("tool", [ToolResult("call_1", "hello\nworld")]),
        Message("user", [Text("Now summarize.")]),
    ], model=VISION, tools=[Tool("read_file", "Read a file", {"type": "object"})]))
    msgs = body["params"]["messages"]
    assert msgs[0]["content"][1] == {"type": "image", "image": PNG, "mimeType": "image/png"}
    assert msgs[1]["content"] == [
        {"type": "reasoning", "text": "I should read it"}, {"type": "text", "text": "Reading."},
        {"type": "tool-call", "toolCallId": "call_1", "toolName": "read_file",
         "input": {"file_path": "a.txt"}}]
    assert msgs[2] == {"role": "tool", "content": [
        {"type": "tool-result", "toolCallId": "call_1", "toolName": "read_file",
         "output": {"type": "text", "value": "hello\nworld"}}]}
    assert body["params"]["tools"] == [{"name": "read_file", "description": "Read a file",
                                        "input_schema": {"type": "object"}}]


def test_unanswered_calls_get_the_cli_placeholder_and_orphan_results_are_dropped():
    body = wire(req([
        Message("user", [Text("go")]),
        Message("assistant", [ToolCall("c1", "a", {}), ToolCall("c2", "b", {})]),
        Message("tool", [ToolResult("c2", "two"), ToolResult("ghost", "never called")]),
        Message("user", [Text("next")]),
    ]))
    msgs = body["params"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "user"]
    results = {p["toolCallId"]: p["output"]["value"] for p in msgs[2]["content"]}
    assert results == {"c2": "two", "c1": MISSING_RESULT}


def test_empty_parts_dropped_and_same_role_turns_merged():
    body = wire(req([Message("user", [Text("a"), Text("")]), Message("user", [Text("  ")]),
                     Message("user", [Text("b")])]))
    assert body["params"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


def test_tool_search_is_renamed_on_the_wire_and_back():
    r = req([Message("user", [Text("find")]),
             Message("assistant", [ToolCall("c1", "tool_search", {"q": "x"})]),
             Message("tool", [ToolResult("c1", "found")])],
            tools=[Tool("tool_search", "search", {"type": "object"})])
    names = tool_wire_names(r)
    body = wire(r)
    assert names == {"tool_search": "search_tools"}
    assert body["params"]["tools"][0]["name"] == "search_tools"
    assert body["params"]["messages"][1]["content"][0]["toolName"] == "search_tools"
    assert body["params"]["messages"][2]["content"][0]["toolName"] == "search_tools"
    dec = Decoder(names)
    events = dec.feed(b'{"type":"tool-call","toolCallId":"c2","toolName":"search_tools","input":{}}\n')
    assert events == [ToolCallEvent("c2", "tool_search", {})]


def test_images_in_tool_results_move_to_a_following_user_turn():
    body = wire(req([
        Message("user", [Text("shot")]),
        Message("assistant", [ToolCall("c1", "screenshot", {})]),
        Message("tool", [ToolResult("c1", "here", images=[Image(PNG, "image/png")])]),
    ], model=VISION))
    msgs = body["params"]["messages"]
    assert msgs[2]["content"][0]["output"]["value"] == "here\n[image 1 attached below]"
    assert msgs[3] == {"role": "user", "content": [{"type": "image", "image": PNG,
                                                    "mimeType": "image/png"}]}


def test_images_for_a_text_only_model_are_refused_clearly():
    with pytest.raises(errors.InvalidRequest, match="does not accept images"):
        normalize(req([Message("user", [Image(PNG, "image/png")])]))


def test_max_tokens_clamped_to_model_and_ceiling_and_options_sent_only_when_set():
    p = wire(req([Message("user", [Text("q")])], model=GLM_FLASH, max_tokens=500000,
                 temperature=0.2, reasoning_effort="high"))["params"]
    assert p["max_tokens"] == 131072 and p["temperature"] == 0.2 and p["reasoning_effort"] == "high"
    p = wire(req([Message("user", [Text("q")])], max_tokens=999999))["params"]
    assert p["max_tokens"] == 200000 and "temperature" not in p and "reasoning_effort" not in p


def test_tool_choice_none_sends_no_tools():
    p = wire(req([Message("user", [Text("q")])], tools=[Tool("t", "", {"type": "object"})],
                 tool_choice="none"))["params"]
    assert p["tools"] == []


def test_assistant_prefill_is_refused():
    with pytest.raises(errors.InvalidRequest, match="last message"):
        wire(req([Message("user", [Text("q")]), Message("assistant", [Text("prefill")])]))


# ---- decoding ----------------------------------------------------------------------------------

TRANSCRIPT_A = (
    '{"type":"start"}\n{"type":"start-step","request":{},"warnings":[]}\n'
    '{"type":"text-start","id":"0"}\n{"type":"text-delta","id":"0","text":"Hello"}\n'
    '{"type":"text-delta","id":"0","text":" wörld 🌍"}\n{"type":"text-end","id":"0"}\n'
    '{"type":"finish-step","finishReason":"stop","rawFinishReason":"stop","usage":{"inputTokens":1200,"outputTokens":3}}\n'
    '{"type":"finish","finishReason":"stop","rawFinishReason":"stop","totalUsage":{"inputTokens":1200,'
    '"inputTokenDetails":{"noCacheTokens":176,"cacheReadTokens":1024,"cacheWriteTokens":0},"outputTokens":3,'
    '"outputTokenDetails":{"textTokens":3,"reasoningTokens":0},"totalTokens":1203}}\n').encode()


def decode_all(data: bytes, step: int | None = None, names=None) -> list:
    dec = Decoder(names)
    events = []
    step = step or max(1, len(data))
    for i in range(0, len(data), step):
        events += dec.feed(data[i:i + step])
    return events + dec.end()


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 64, None])
def test_decoder_is_indifferent_to_where_chunks_split(step):
    events = decode_all(TRANSCRIPT_A, step)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Hello wörld 🌍"
    fin = events[-1]
    assert isinstance(fin, Finish) and fin.reason == STOP
    assert (fin.usage.input_tokens, fin.usage.cache_read_tokens, fin.usage.output_tokens) == (1200, 1024, 3)
    assert fin.usage.uncached_input_tokens == 176


def test_decoder_tolerates_blank_garbage_data_prefix_and_done_and_ignores_late_events():
    data = (b'\n  \nnot json\n[1,2]\ndata: {"type":"text-delta","text":"a"}\ndata: [DONE]\n'
            b'{"type":"text-delta","text":"b"}\n{"type":"finish","finishReason":"stop"}\n'
            b'{"type":"text-delta","text":"IGNORED"}\n')
    events = decode_all(data)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["a", "b"]


def test_reasoning_and_tool_calls_decode_and_tool_calls_set_the_finish_reason():
    data = "\n".join(json.dumps(e) for e in [
        {"type": "reasoning-delta", "id": "r", "text": "think"},
        {"type": "tool-call", "toolCallId": "a", "toolName": "f", "input": '{"x": 1}'},
        {"type": "tool-call", "toolCallId": "b", "toolName": "f", "args": [{"y": 2}]},
        {"type": "tool-call", "toolCallId": "s", "toolName": "web", "input": {}, "providerExecuted": True},
        {"type": "tool-call", "toolCallId": "c", "toolName": "f", "input": None},
        {"type": "finish", "finishReason": "stop"}]).encode() + b"\n"
    events = decode_all(data)
    assert events[0] == ReasoningDelta("think")
    assert events[1:4] == [ToolCallEvent("a", "f", {"x": 1}), ToolCallEvent("b", "f", {"y": 2}),
                           ToolCallEvent("c", "f", {})]
    assert events[4].reason == TOOL_CALLS


@pytest.mark.parametrize("finish,raw,reason", [
    ("stop", "stop", STOP), ("other", "end_turn", STOP), ("length", "max_tokens", LENGTH),
    ("other", "max_output_tokens", LENGTH), ("other", "model_context_window_exceeded", LENGTH),
    ("content-filter", "", CONTENT_FILTER), ("other", "refusal", CONTENT_FILTER),
    ("tool-calls", "tool_calls", TOOL_CALLS)])
def test_finish_reasons_never_hide_truncation_as_stop(finish, raw, reason):
    line = json.dumps({"type": "finish", "finishReason": finish, "rawFinishReason": raw})
    assert decode_all(line.encode() + b"\n")[-1].reason == reason


@pytest.mark.parametrize("finish,raw", [("error", ""), ("other", "network_error"),
                                        ("stop", "connection_error")])
def test_a_finish_that_reports_a_failure_is_an_error(finish, raw):
    line = json.dumps({"type": "finish", "finishReason": finish, "rawFinishReason": raw})
    with pytest.raises(errors.UpstreamError):
        decode_all(line.encode() + b"\n")


@pytest.mark.parametrize("data", [b"", b'{"type":"start"}\n', b'{"type":"text-delta","text":"Hel"}\n',
                                  b'{"type":"text-delta","text":"Hel"}\n{"type":"fin'])
def test_a_stream_without_finish_is_an_error_never_a_stop(data):
    with pytest.raises(errors.UpstreamError, match="no finish"):
        decode_all(data)


def test_finish_without_a_trailing_newline_still_counts():
    assert decode_all(b'{"type":"finish","finishReason":"stop"}')[-1].reason == STOP


def test_abort_ends_cleanly():
    events = decode_all(b'{"type":"text-delta","text":"partial"}\n{"type":"abort","reason":"user"}\n')
    assert events[-1].reason == STOP


def test_cache_writes_from_provider_metadata_and_never_double_counted():
    data = (b'{"type":"provider-metadata","providerMetadata":{"anthropic":{"usage":{"cache_creation":'
            b'{"ephemeral_1h_input_tokens":500}}}}}\n'
            b'{"type":"finish","finishReason":"stop","totalUsage":{"inputTokens":900,"outputTokens":1,'
            b'"inputTokenDetails":{"cacheReadTokens":0,"cacheWriteTokens":800}}}\n')
    u = decode_all(data)[-1].usage
    assert (u.input_tokens, u.cache_write_tokens, u.uncached_input_tokens) == (900, 800, 100)


@pytest.mark.parametrize("error,cls,status", [
    ({"message": "Insufficient credits", "statusCode": 400, "isRetryable": False},
     errors.InsufficientCredits, 402),
    ("Upstream overloaded", errors.Overloaded, 529),
    ({"type": "server_error", "message": "Insufficient Balance", "statusCode": 402},
     errors.InsufficientCredits, 402),
    ({"message": '429 {"error":{"type":"rate_limit_error","message":"slow down"}}'},
     errors.RateLimited, 429),
    ({"message": "MODEL_NOT_IN_PLAN: claude-opus-5 is not included in your plan", "statusCode": 403},
     errors.PermissionDenied, 403),
    ({"message": "boom"}, errors.UpstreamError, 502),
])
def test_inband_errors_map_to_statuses(error, cls, status):
    line = json.dumps({"type": "error", "error": error}).encode() + b"\n"
    with pytest.raises(cls) as info:
        decode_all(b'{"type":"start"}\n' + line)
    assert info.value.status == status


def test_pause_turn_is_not_a_finish():
    dec = Decoder()
    out = dec.feed(b'{"type":"text-delta","text":"one"}\n'
                   b'{"type":"finish","finishReason":"other","rawFinishReason":"pause_turn",'
                   b'"totalUsage":{"inputTokens":5,"outputTokens":2}}\n')
    assert out == [TextDelta("one")] and dec.done and dec.paused
    nxt = Decoder(carry=dec.usage)
    fin = nxt.feed(b'{"type":"finish","finishReason":"stop","totalUsage":{"inputTokens":7,"outputTokens":3}}\n')
    assert fin[-1].usage.input_tokens == 12 and fin[-1].usage.output_tokens == 5
