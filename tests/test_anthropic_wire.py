"""The Provider API's Anthropic format (gateway/upstream/anthropic_wire.py) without a server: its
stream decoder, fed the same bytes in every split, and its request bodies (Claude's rules)."""
from __future__ import annotations

import json

import pytest

from gateway import errors
from gateway.canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish,
                               Image, Message, Reasoning, ReasoningDelta, SystemBlock, Text,
                               TextDelta, ToolCall, ToolCallEvent, ToolResult, Usage)
from gateway.catalog import Model
from gateway.upstream import anthropic_wire
from tests.wire_fixtures import (CATALOG, SONNET, HAIKU, PNG, JPG, SCHEMA, READ, req, hi, split,
                                 run, anthropic_sse)


# ---- Anthropic format: decoder ---------------------------------------------------------------------

def message_start(input_tokens=10, cache_read=0, cache_write=0, output_tokens=1) -> dict:
    return {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "output_tokens": output_tokens}}}


def block_start(index, block) -> dict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index, d) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": d}


def block_stop(index) -> dict:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason="end_turn", **usage) -> dict:
    return {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": usage or {"output_tokens": 57}}


STOP_EV = {"type": "message_stop"}
PING = {"type": "ping"}


def test_anthropic_thinking_text_tool_use_and_usage(split):
    data = anthropic_sse(
        message_start(input_tokens=10, cache_read=3000, cache_write=200, output_tokens=1),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        PING,
        delta(0, {"type": "thinking_delta", "thinking": "Let me think… ✓"}),
        delta(0, {"type": "thinking_delta", "thinking": " more"}),
        delta(0, {"type": "signature_delta", "signature": "EqQBCkYIARgCIkB+sig=="}),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Hello 世界"}),
        delta(1, {"type": "text_delta", "text": "!"}),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": ""}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"path": "dir/'}),
        delta(2, {"type": "input_json_delta", "partial_json": 'é.txt", "n": 2}'}),
        block_stop(2),
        message_delta("tool_use", output_tokens=57),
        STOP_EV)
    usage = Usage(input_tokens=3210, output_tokens=57, cache_read_tokens=3000,
                  cache_write_tokens=200)
    assert run(anthropic_wire.Decoder, data, split) == [
        ReasoningDelta("Let me think… ✓"), ReasoningDelta(" more"),
        ReasoningDelta("", "EqQBCkYIARgCIkB+sig=="),
        TextDelta("Hello 世界"), TextDelta("!"),
        ToolCallEvent("toolu_1", "read_file", {"path": "dir/é.txt", "n": 2}),
        Finish(TOOL_CALLS, usage)]
    assert usage.uncached_input_tokens == 10


def test_anthropic_decoder_emits_as_events_arrive_and_tool_calls_at_block_stop():
    d = anthropic_wire.Decoder()
    assert d.feed(anthropic_sse(message_start())) == []
    assert d.feed(anthropic_sse(block_start(0, {"type": "text", "text": "Hi"}))) == [TextDelta("Hi")]
    assert d.feed(anthropic_sse(block_stop(0))) == []
    assert d.feed(anthropic_sse(
        block_start(1, {"type": "tool_use", "id": "t", "name": "f", "input": {}}),
        delta(1, {"type": "input_json_delta", "partial_json": '{"a":1}'}))) == []
    assert d.feed(anthropic_sse(block_stop(1))) == [ToolCallEvent("t", "f", {"a": 1})]
    assert d.feed(anthropic_sse(message_delta("tool_use", output_tokens=3))) == []
    assert not d.done
    assert d.feed(anthropic_sse(STOP_EV, delta(2, {"type": "text_delta", "text": "late"}))) == [
        Finish(TOOL_CALLS, Usage(input_tokens=10, output_tokens=3))]
    assert d.done and d.usage == Usage(input_tokens=10, output_tokens=3)
    assert d.feed(anthropic_sse(delta(2, {"type": "text_delta", "text": "later"}))) == []
    assert d.end() == []


@pytest.mark.parametrize("stop_reason, reason", [
    ("end_turn", STOP), ("max_tokens", LENGTH), ("tool_use", TOOL_CALLS),
    ("refusal", CONTENT_FILTER), ("stop_sequence", STOP), ("pause_turn", STOP),
    ("model_context_window_exceeded", LENGTH), ("brand_new_reason", STOP), (None, STOP)])
def test_anthropic_stop_reasons(stop_reason, reason, split):
    data = anthropic_sse(message_start(), block_start(0, {"type": "text", "text": ""}),
                         delta(0, {"type": "text_delta", "text": "x"}), block_stop(0),
                         message_delta(stop_reason, output_tokens=5), STOP_EV)
    assert run(anthropic_wire.Decoder, data, split) == [
        TextDelta("x"), Finish(reason, Usage(input_tokens=10, output_tokens=5))]


def test_anthropic_usage_repeated_in_message_delta_is_not_counted_twice(split):
    data = anthropic_sse(
        message_start(input_tokens=10, cache_read=100, cache_write=0, output_tokens=1),
        message_delta("end_turn", input_tokens=10, cache_read_input_tokens=100,
                      cache_creation_input_tokens=30, output_tokens=40),
        STOP_EV)
    assert run(anthropic_wire.Decoder, data, split) == [
        Finish(STOP, Usage(input_tokens=140, output_tokens=40, cache_read_tokens=100,
                           cache_write_tokens=30))]


def test_anthropic_message_stop_without_any_usage_or_delta(split):
    data = anthropic_sse({"type": "message_start", "message": {"id": "m"}}, STOP_EV)
    assert run(anthropic_wire.Decoder, data, split) == [Finish(STOP, Usage())]


def test_anthropic_tool_use_odd_inputs(split):
    data = anthropic_sse(
        message_start(),
        block_start(0, {"type": "tool_use", "id": "t0", "name": "no_args", "input": {}}),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "t1", "name": "broken", "input": {}}),
        delta(1, {"type": "input_json_delta", "partial_json": '{"a": '}),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "t2", "name": "given", "input": {"k": "v"}}),
        block_stop(2),
        delta(3, {"type": "input_json_delta", "partial_json": '{"stray": 1}'}),    # no open tool
        message_delta("tool_use"), STOP_EV)
    assert run(anthropic_wire.Decoder, data, split) == [
        ToolCallEvent("t0", "no_args", {}), ToolCallEvent("t1", "broken", {}),
        ToolCallEvent("t2", "given", {"k": "v"}),
        Finish(TOOL_CALLS, Usage(input_tokens=10, output_tokens=57))]


@pytest.mark.parametrize("error, cls, status", [
    ({"type": "overloaded_error", "message": "Overloaded"}, errors.Overloaded, 529),
    ({"type": "rate_limit_error", "message": "Too many"}, errors.RateLimited, 429),
    ({"type": "api_error", "message": "Internal server error"}, errors.UpstreamError, 502),
    ({"type": "invalid_request_error", "message": "Insufficient credits: top up"},
     errors.InsufficientCredits, 402),
])
def test_anthropic_error_event_raises_the_mapped_error(error, cls, status, split):
    data = anthropic_sse(message_start(), block_start(0, {"type": "text", "text": ""}),
                         delta(0, {"type": "text_delta", "text": "partial"}),
                         {"type": "error", "error": error}, STOP_EV)
    with pytest.raises(errors.GatewayError) as exc:
        run(anthropic_wire.Decoder, data, split)
    assert type(exc.value) is cls and exc.value.status == status
    assert error["message"] in exc.value.message


@pytest.mark.parametrize("events", [
    [],
    [message_start()],
    [message_start(), block_start(0, {"type": "text", "text": ""}),
     delta(0, {"type": "text_delta", "text": "half"})],
    [message_start(), block_start(0, {"type": "tool_use", "id": "t", "name": "f", "input": {}}),
     delta(0, {"type": "input_json_delta", "partial_json": '{"a": 1}'}), block_stop(0)],
    [message_start(), message_delta("end_turn")],
], ids=["empty", "start-only", "mid-text", "after-tool", "no-message-stop"])
def test_anthropic_stream_cut_before_message_stop_raises(events, split):
    with pytest.raises(errors.UpstreamError) as exc:
        run(anthropic_wire.Decoder, anthropic_sse(*events), split)
    assert exc.value.code == "upstream_truncated" and exc.value.status == 502


def test_anthropic_message_stop_without_its_blank_line_still_counts(split):
    data = anthropic_sse(message_start(), message_delta("max_tokens"))
    data += b'event: message_stop\ndata: {"type":"message_stop"}'
    assert run(anthropic_wire.Decoder, data, split) == [
        Finish(LENGTH, Usage(input_tokens=10, output_tokens=57))]


def test_anthropic_ignores_junk_and_unknown_events(split):
    data = (b": comment\n\nevent: ping\ndata: not json\n\ndata: [1]\n\n" + anthropic_sse(
        message_start(), {"type": "something_new", "x": 1},
        block_start(0, {"type": "redacted_thinking", "data": "xyz"}), block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": ""}),
        delta(1, {"type": "citations_delta", "citation": {}}),
        delta(1, {"type": "text_delta", "text": "ok"}), block_stop(1),
        message_delta("end_turn", output_tokens=2), STOP_EV))
    assert run(anthropic_wire.Decoder, data, split) == [
        TextDelta("ok"), Finish(STOP, Usage(input_tokens=10, output_tokens=2))]


# ---- Anthropic format: encoder ---------------------------------------------------------------------

def test_anthropic_encode_minimal_body_with_system_blocks():
    body = anthropic_wire.encode(hi(
        model=SONNET, system=[SystemBlock("You are terse.", {"type": "ephemeral"}),
                              SystemBlock(" \n "), SystemBlock("Answer in French.")]))
    assert body == {
        "model": "claude-sonnet-5", "max_tokens": 32000,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": True,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in French."}]}
    assert "system" not in anthropic_wire.encode(hi(model=SONNET, system=[SystemBlock("  ")]))


def test_anthropic_encode_full_history():
    body = anthropic_wire.encode(req([
        Message("user", [Text("Look at this"), Image(PNG, "image/png")]),
        Message("assistant", [Reasoning("I should read it", "sig-1"),
                              Reasoning("another model's thoughts"), Text("Reading."),
                              ToolCall("toolu_1", "read_file", {"path": "é.txt"}),
                              ToolCall("toolu_2", "screenshot", {})]),
        Message("tool", [ToolResult("toolu_1", "no such file", is_error=True),
                         ToolResult("toolu_2", "the screen", images=[Image(JPG, "image/jpeg")]),
                         ]),
        Message("user", [Text("And now?")]),
        Message("assistant", [ToolCall("toolu_3", "screenshot", {})]),
        Message("tool", [ToolResult("toolu_3", ""),]),
    ], model=SONNET, tools=[READ], max_tokens=4000, temperature=0.5))
    assert body == {
        "model": "claude-sonnet-5", "max_tokens": 4000, "stream": True, "temperature": 0.5,
        "tools": [{"name": "read_file", "description": "Read a file", "input_schema": SCHEMA}],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look at this"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should read it", "signature": "sig-1"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "read_file",
                 "input": {"path": "é.txt"}},
                {"type": "tool_use", "id": "toolu_2", "name": "screenshot", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "no such file"}], "is_error": True},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                    {"type": "text", "text": "the screen"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                 "data": "/9j/4AAQSkZJRg=="}}]},
                {"type": "text", "text": "And now?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_3", "name": "screenshot", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_3", "content": "(empty)"}]},
        ]}


def test_anthropic_encode_roles_alternate_starting_with_user():
    body = anthropic_wire.encode(req([
        Message("assistant", [Text("Earlier answer")]),
        Message("user", [Text("one")]),
        Message("user", [Text("two")]),
        Message("assistant", [Reasoning("unsigned only")]),      # nothing left: dropped
        Message("user", [Text("three")]),
        Message("assistant", [Text("a")]),
        Message("assistant", [Text("b")]),
    ], model=SONNET))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "(continue)"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Earlier answer"}]},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"},
                                     {"type": "text", "text": "three"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and all(a != b for a, b in zip(roles, roles[1:]))


def test_anthropic_encode_image_only_tool_result_and_data_url_without_comma():
    body = anthropic_wire.encode(req([
        Message("user", [Text("go")]),
        Message("assistant", [ToolCall("t", "shot", {})]),
        Message("tool", [ToolResult("t", "", images=[Image("data:image/png;base64", "image/png")])]),
    ], model=SONNET))
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]}]}


@pytest.mark.parametrize("effort, max_tokens, sent_max, budget", [
    ("low", None, 32000, 4096), ("medium", None, 32000, 16384), ("high", None, 32000, 31999),
    ("xhigh", None, 32000, 31999), ("max", None, 32000, 31999), ("high", 10000, 10000, 9999),
    ("low", 64000, 64000, 4096), ("xhigh", 100000, 100000, 65536),
    ("low", 1025, 1025, 1024), ("low", 1024, 1024, None), ("medium", 500, 500, None)])
def test_anthropic_encode_thinking_budget_below_max_tokens(effort, max_tokens, sent_max, budget):
    body = anthropic_wire.encode(hi(model=SONNET, reasoning_effort=effort, max_tokens=max_tokens,
                                    temperature=0.7, tools=[READ], tool_choice="required"))
    assert body["max_tokens"] == sent_max
    if budget is None:              # too small for extended thinking: sent without it
        assert "thinking" not in body
        assert body["temperature"] == 0.7
        assert body["tool_choice"] == {"type": "any"}
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert body["thinking"]["budget_tokens"] < body["max_tokens"]
        assert "temperature" not in body                # extended thinking takes no temperature
        assert body["tool_choice"] == {"type": "auto"}  # nor tool_choice any


def test_anthropic_encode_no_thinking_for_models_without_efforts_or_without_effort():
    body = anthropic_wire.encode(hi(model=HAIKU, reasoning_effort="high", temperature=1.7))
    assert "thinking" not in body and body["temperature"] == 1.0      # capped at Claude's 1.0
    body = anthropic_wire.encode(hi(model=SONNET, temperature=0.0))
    assert "thinking" not in body and body["temperature"] == 0.0


@pytest.mark.parametrize("choice, tools, sent", [
    ("auto", True, {"type": "auto"}), ("required", True, {"type": "any"}), ("none", True, None),
    ("auto", False, None), ("required", False, None)])
def test_anthropic_encode_tool_choice(choice, tools, sent):
    body = anthropic_wire.encode(hi(model=SONNET, tools=[READ] if tools else [], tool_choice=choice))
    assert body.get("tool_choice") == sent
    assert ("tools" in body) == (sent is not None)


def test_anthropic_encode_max_tokens_capped_by_the_models_max_output():
    capped = CATALOG.with_upstream([{"id": "claude-sonnet-5", "max_output_tokens": 64000}])
    model = capped.resolve("claude-sonnet-5")
    assert model.max_output == 64000
    assert anthropic_wire.encode(hi(model=model, max_tokens=100000))["max_tokens"] == 64000
    assert anthropic_wire.encode(hi(model=model, max_tokens=5000))["max_tokens"] == 5000
    assert anthropic_wire.encode(hi(model=model))["max_tokens"] == 32000
    small = Model("claude-tiny", True, ("low", "high"), 100000, 8000, None)
    body = anthropic_wire.encode(hi(model=small, reasoning_effort="high"))
    assert body["max_tokens"] == 8000
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 7999}
    assert anthropic_wire.encode(hi(model=SONNET, max_tokens=200000))["max_tokens"] == 200000



# ---- fixes found by review -----------------------------------------------------------------------

def _tool_loop(assistant_parts) -> ChatRequest:
    return req([Message("user", [Text("read it")]),
                Message("assistant", assistant_parts),
                Message("tool", [ToolResult("t1", "contents", name="read_file")])],
               model=SONNET, tools=[READ], reasoning_effort="high", max_tokens=40000)


def test_anthropic_encode_no_thinking_when_the_continued_tool_turn_has_no_signed_thinking():
    """Claude refuses thinking when the tool turn it continues does not start with a signed
    thinking block (the turn came from an OpenAI client, or was made without thinking)."""
    unsigned = anthropic_wire.encode(_tool_loop([Reasoning("hmm"), ToolCall("t1", "read_file", {})]))
    assert "thinking" not in unsigned
    assert unsigned["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "read_file", "input": {}}]
    signed = anthropic_wire.encode(_tool_loop([Reasoning("hmm", "SIG"),
                                               ToolCall("t1", "read_file", {})]))
    assert signed["thinking"] == {"type": "enabled", "budget_tokens": 32768}
    assert signed["messages"][1]["content"][0] == {"type": "thinking", "thinking": "hmm",
                                                   "signature": "SIG"}
    # a plain question after earlier tool turns may think again
    plain = req([Message("user", [Text("q")]), Message("assistant", [Text("a")]),
                 Message("user", [Text("q2")])], model=SONNET, reasoning_effort="high",
                max_tokens=40000)
    assert anthropic_wire.encode(plain)["thinking"]["type"] == "enabled"


def test_anthropic_decoder_ignores_events_whose_members_are_not_objects():
    d = anthropic_wire.Decoder()
    data = anthropic_sse({"type": "message_start", "message": "x"},
                         {"type": "content_block_start", "index": 0, "content_block": None},
                         {"type": "content_block_delta", "index": 0, "delta": [1]},
                         {"type": "message_delta", "delta": "y", "usage": {"output_tokens": 3}},
                         STOP_EV)
    events = d.feed(data) + d.end()
    assert events == [Finish(STOP, Usage(output_tokens=3))]
