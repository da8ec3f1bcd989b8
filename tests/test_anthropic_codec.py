"""The Anthropic codec without a server: ``decode``, the SSE ``EventEncoder`` and ``message()``,
plus Flask test-client checks of what needs a special configuration (``model_map``, small
limits, short timeouts).

Encoded streams are fed to the SDK's own accumulator (``anthropic.lib.streaming``), so "the SDK
understands it" is tested directly, not assumed.
"""
from __future__ import annotations

import json

import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import (Message, RawContentBlockDeltaEvent, RawContentBlockStartEvent,
                             RawContentBlockStopEvent, RawMessageDeltaEvent, RawMessageStartEvent,
                             RawMessageStopEvent, RawMessageStreamEvent)
from pydantic import TypeAdapter

from gateway import create_app, errors
from gateway.canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, Finish, Image, Message as Msg,
                               Reasoning, ReasoningDelta, Text, TextDelta, ToolCall, ToolCallEvent,
                               ToolResult, Usage)
from gateway.catalog import Catalog
from gateway.codecs import anthropic_messages as codec
from gateway.config import ConfigError
from gateway.images import RemoteImages
from gateway.normalize import normalize
from tests.conftest import LOCAL_KEY, gateway_config
from tests.fake_upstream import USAGE

FLASH = "deepseek/deepseek-v4-flash"
PRO = "deepseek/deepseek-v4-pro"
VISION = "moonshotai/Kimi-K3"
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5E"
           "rkJggg==")
PNG_BLOCK = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}

CATALOG = Catalog.load()
IMAGES = RemoteImages(False, 10 * 1024 * 1024, 5.0)
EVENT_ADAPTER = TypeAdapter(RawMessageStreamEvent)
EVENT_CLASSES = {"message_start": RawMessageStartEvent, "content_block_start": RawContentBlockStartEvent,
                 "content_block_delta": RawContentBlockDeltaEvent,
                 "content_block_stop": RawContentBlockStopEvent, "message_delta": RawMessageDeltaEvent,
                 "message_stop": RawMessageStopEvent}


def body(*messages, **kw) -> dict:
    return {"model": FLASH, "max_tokens": 100,
            "messages": list(messages) or [{"role": "user", "content": "hi"}], **kw}


def decode(b: dict):
    return codec.decode(b, CATALOG, IMAGES)


def invalid(b) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as info:
        decode(b)
    assert info.value.status == 400 and info.value.anthropic_type == "invalid_request_error"
    return info.value


def sse(data: bytes) -> list[tuple[str, dict]]:
    """Parse encoder output: ``(event name, data)`` per SSE frame, each one well formed."""
    text = data.decode("utf-8")
    out = []
    for frame in text.split("\n\n"):
        if frame:
            name_line, data_line = frame.split("\n")
            assert name_line.startswith("event: ") and data_line.startswith("data: "), frame
            parsed = json.loads(data_line[6:])
            assert parsed["type"] == name_line[7:]
            out.append((name_line[7:], parsed))
    assert text.endswith("\n\n") or not text
    return out


def encode(events, model: str = "claude-test", message_id: str | None = None) -> list[tuple[str, dict]]:
    enc = codec.EventEncoder(model, message_id)
    return sse(b"".join(enc.event(ev) for ev in events))


def sdk_accumulate(frames) -> object:
    """The final message the SDK's own stream accumulator builds from our events."""
    snapshot, bufs = None, {}
    for name, data in frames:
        cls = EVENT_CLASSES[name]
        assert isinstance(EVENT_ADAPTER.validate_python(data), cls)
        snapshot = accumulate_event(event=cls.model_validate(data), current_snapshot=snapshot,
                                    json_bufs=bufs)
    return snapshot


def block_order(frames) -> list[str]:
    """Block types in order, asserting consecutive indexes and that blocks never overlap."""
    blocks, open_index = [], None
    for name, data in frames:
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append(data["content_block"]["type"])
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None
    return blocks


# ---- decode: the request ------------------------------------------------------------------------

def test_decode_resolves_the_model_and_keeps_the_name_asked_for():
    req = decode(body(model="DeepSeek-V4-Flash", max_tokens=321, temperature=0.5, stream=True))
    assert req.model.id == FLASH and req.requested_model == "DeepSeek-V4-Flash"
    assert (req.max_tokens, req.temperature, req.stream, req.tool_choice) == (321, 0.5, True, "auto")
    assert req.system == [] and req.tools == [] and req.reasoning_effort is None
    assert req.messages == [Msg("user", [Text("hi")])]


def test_decode_ignores_fields_command_code_has_no_use_for():
    req = decode(body(stop_sequences=["x"], top_k=3, top_p=0.5, metadata={"user_id": "u"},
                      service_tier="auto", container=None, context_management={"edits": []},
                      output_config={"effort": "low"}))
    assert req.messages == [Msg("user", [Text("hi")])]


def test_system_string_and_blocks_with_cache_control():
    assert [(b.text, b.cache_control) for b in decode(body(system="Be brief.")).system] == [("Be brief.", None)]
    req = decode(body(system=[
        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral", "ttl": "1h", "future": 1}},
        {"type": "text", "text": "B"},
        {"type": "text", "text": "C", "cache_control": {"type": "ephemeral"}}]))
    # unknown fields dropped, the ttl kept (Claude on the Provider API honours it)
    assert [(b.text, b.cache_control) for b in req.system] == [
        ("A", {"type": "ephemeral", "ttl": "1h"}), ("B", None), ("C", {"type": "ephemeral"})]
    err = invalid(body(system=[{"type": "text", "text": "A"}, {"type": "image", "source": {}}]))
    assert err.param == "system[1].type"


def test_tool_results_go_before_the_users_text_in_their_own_turn():
    history = [{"role": "user", "content": "q"},
               {"role": "assistant", "content": [
                   {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "x"}},
                   {"type": "tool_use", "id": "t2", "name": "search"}]},
               {"role": "user", "content": [
                   {"type": "text", "text": "and now?"},
                   {"type": "tool_result", "tool_use_id": "t1", "content": "plain"},
                   {"type": "tool_result", "tool_use_id": "t2", "is_error": True,
                    "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}]}]}]
    req = decode(body(*history))
    assert [m.role for m in req.messages] == ["user", "assistant", "tool", "user"]
    assert req.messages[1].parts == [ToolCall("t1", "search", {"q": "x"}), ToolCall("t2", "search", {})]
    assert req.messages[2].parts == [ToolResult("t1", "plain"),
                                     ToolResult("t2", "line 1\nline 2", is_error=True)]
    assert req.messages[3].parts == [Text("and now?")]


def test_tool_result_content_forms():
    def result(**kw):
        req = decode(body({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", **kw}]}))
        return req.messages[0].parts[0]
    assert result().content == "" and result().is_error is False
    assert result(content="").content == ""
    assert result(content=[]).content == ""
    img = result(content=[{"type": "text", "text": "shot"}, PNG_BLOCK])
    assert img.content == "shot" and img.images == [Image(f"data:image/png;base64,{PNG_B64}", "image/png")]
    err = invalid(body({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "video", "source": {}}]}]}))
    assert err.param == "messages[0].content[0].content[0].type"
    assert invalid(body({"role": "user", "content": [{"type": "tool_result"}]})).param == \
        "messages[0].content[0].tool_use_id"


def test_assistant_blocks_thinking_kept_with_signature_redacted_and_server_blocks_dropped():
    req = decode(body({"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "SIG"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
        {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
        {"type": "text", "text": "answer"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}))
    assert req.messages[1].parts == [Reasoning("hmm", "SIG"), Text("answer"), ToolCall("t1", "f", {"a": 1})]
    assert "opaque" not in repr(req)
    assert decode(body({"role": "assistant", "content": "prefill"})).messages == [Msg("assistant", [Text("prefill")])]
    err = invalid(body({"role": "assistant", "content": [PNG_BLOCK]}))
    assert err.param == "messages[0].content[0].type"


def test_tools_client_kept_server_dropped():
    req = decode(body(tools=[
        {"name": "a", "description": "A", "input_schema": SCHEMA, "cache_control": {"type": "ephemeral"}},
        {"type": "custom", "name": "b", "input_schema": SCHEMA},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
        {"type": "bash_20250124", "name": "bash"}]))
    assert [(t.name, t.description, t.input_schema) for t in req.tools] == [("a", "A", SCHEMA), ("b", "", SCHEMA)]
    assert invalid(body(tools=[{"name": "a"}])).param == "tools[0].input_schema"
    assert invalid(body(tools=["a"])).param == "tools[0]"


@pytest.mark.parametrize("choice,expected", [
    (None, "auto"), ({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
    ({"type": "any"}, "required"), ({"type": "tool", "name": "a"}, "required"),
    ({"type": "auto", "disable_parallel_tool_use": True}, "auto"),
])
def test_tool_choice(choice, expected):
    assert decode(body(tool_choice=choice)).tool_choice == expected


@pytest.mark.parametrize("model,budget,effort", [
    ("claude-sonnet-4-6", 1024, "low"),
    ("claude-sonnet-4-6", 4096, "low"),
    ("claude-sonnet-4-6", 4097, "medium"),
    ("claude-sonnet-4-6", 16384, "medium"),
    ("claude-sonnet-4-6", 32768, "high"),
    ("claude-sonnet-4-6", 65536, "xhigh"),
    ("claude-sonnet-4-6", 65537, "max"),
    (FLASH, 1024, "high"),                   # flash takes high/max only: a small budget is "high"
    (FLASH, 32768, "high"),
    (FLASH, 50000, "max"),                   # xhigh is between high and max: ties go up
    (VISION, 10000, "high"),                 # Kimi-K3 has low/high/max: medium goes up to high
    (VISION, 2000, "low"),
    ("Qwen/Qwen3.8-Max", 20000, "xhigh"),    # low/medium/xhigh: high goes up to xhigh
    ("moonshotai/Kimi-K2.6", 50000, None),   # no efforts: none sent
    ("claude-haiku-4-5", 50000, None),
])
def test_thinking_budget_becomes_an_accepted_effort(model, budget, effort):
    req = decode(body(model=model, thinking={"type": "enabled", "budget_tokens": budget}))
    assert req.reasoning_effort == effort
    assert effort is None or effort in req.model.efforts


@pytest.mark.parametrize("thinking", [None, {"type": "disabled"}])
def test_no_thinking_means_no_effort(thinking):
    assert decode(body(thinking=thinking)).reasoning_effort is None


@pytest.mark.parametrize("model,thinking,config,effort", [
    # Claude Code: adaptive thinking with --effort in output_config
    ("claude-sonnet-4-6", {"type": "adaptive"}, {"effort": "low"}, "low"),
    ("claude-sonnet-4-6", {"type": "adaptive", "display": "omitted"}, {"effort": "medium"}, "medium"),
    ("claude-sonnet-4-6", {"type": "adaptive"}, {"effort": "max"}, "max"),
    ("claude-sonnet-4-6", {"type": "adaptive"}, {"effort": "xhigh"}, "xhigh"),
    ("claude-sonnet-4-6", {"type": "adaptive"}, None, "high"),     # Anthropic's default effort
    (FLASH, {"type": "adaptive"}, {"effort": "low"}, "high"),      # clamped: flash takes high/max
    (FLASH, {"type": "adaptive"}, {"effort": "max"}, "max"),
    (FLASH, None, {"effort": "max"}, "max"),                       # effort alone counts too
    ("moonshotai/Kimi-K2.6", {"type": "adaptive"}, {"effort": "max"}, None),   # takes none
    ("claude-sonnet-4-6", {"type": "enabled", "budget_tokens": 2000}, {"effort": "high"}, "high"),
    ("claude-sonnet-4-6", {"type": "disabled"}, {"effort": "max"}, None),
])
def test_adaptive_thinking_and_output_config_effort(model, thinking, config, effort):
    req = decode(body(model=model, thinking=thinking, output_config=config))
    assert req.reasoning_effort == effort


def test_system_messages_mid_conversation_become_reminders_in_order():
    """Claude Code 2.1's mid-conversation system turns: the text reaches the model where it was."""
    req = decode(body(
        {"role": "system", "content": "before all"},
        {"role": "user", "content": "q1"},
        {"role": "system", "content": [{"type": "text", "text": "env", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "system", "content": "after the call"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                     {"type": "text", "text": "q2"}]},
        {"role": "assistant", "content": "a2"},
        {"role": "system", "content": "<system-reminder>already wrapped</system-reminder>"}))
    wrap = lambda t: f"<system-reminder>\n{t}\n</system-reminder>"
    assert [m.role for m in req.messages] == ["user", "user", "user", "assistant", "tool", "user",
                                              "assistant", "user"]
    assert req.messages[0].parts == [Text(wrap("before all"))]
    assert req.messages[2].parts == [Text(wrap("env"), {"type": "ephemeral"})]
    assert req.messages[4].parts[0].call_id == "t1"        # results first: the call stays answered
    assert req.messages[5].parts == [Text(wrap("after the call")), Text("q2")]
    assert req.messages[7].parts == [Text("<system-reminder>already wrapped</system-reminder>")]
    normalized = normalize(req)
    assert [m.role for m in normalized.messages] == ["user", "assistant", "tool", "user", "assistant", "user"]


def test_a_system_message_with_a_non_text_block_is_refused_by_path():
    err = invalid(body({"role": "user", "content": "q"},
                       {"role": "system", "content": [{"type": "image", "source": {}}]}))
    assert err.param == "messages[1].content[0].type"


def test_deferred_tools_are_sent_once_a_tool_reference_loads_them():
    """Claude Code's ToolSearch: deferred tools stay hidden until a tool_result references them."""
    schema = {"type": "object", "properties": {}}
    tools = [{"name": "ToolSearch", "description": "find tools", "input_schema": schema},
             {"name": "WebFetch", "description": "fetch", "input_schema": schema, "defer_loading": True},
             {"name": "Cron", "description": "cron", "input_schema": schema, "defer_loading": True}]
    first = decode(body({"role": "user", "content": "q"}, tools=tools))
    assert [t.name for t in first.tools] == ["ToolSearch"]
    later = decode(body(
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ToolSearch",
                                           "input": {"query": "select:WebFetch"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "tool_reference", "tool_name": "WebFetch"}]}]}, tools=tools))
    assert [t.name for t in later.tools] == ["ToolSearch", "WebFetch"]
    assert later.messages[2].parts[0].content == "Tool loaded: WebFetch"


def test_images_base64_and_refused_urls():
    req = decode(body({"role": "user", "content": [{"type": "text", "text": "look"}, PNG_BLOCK]}, model=VISION))
    assert req.messages[0].parts[1] == Image(f"data:image/png;base64,{PNG_B64}", "image/png")
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    err = invalid(body({"role": "user", "content": [url]}, model=VISION))
    assert err.param == "messages[0].content[0].source.url" and err.code == "remote_image_refused"
    bad_type = {"type": "image", "source": {"type": "file", "file_id": "f"}}
    assert invalid(body({"role": "user", "content": [bad_type]})).param == "messages[0].content[0].source.type"
    pdf = {"type": "image", "source": {"type": "base64", "media_type": "application/pdf", "data": "AAAA"}}
    assert invalid(body({"role": "user", "content": [pdf]})).param == "messages[0].content[0].source"


@pytest.mark.parametrize("bad,param", [
    ({"model": FLASH, "max_tokens": 5}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}, "model"),
    ({"model": FLASH, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens="10"), "max_tokens"),
    (body(temperature=1.5), "temperature"),
    (body(stream="yes"), "stream"),
    (body(tool_choice={"type": "sometimes"}), "tool_choice.type"),
    (body(tool_choice="auto"), "tool_choice"),
    (body(thinking={"type": "enabled", "budget_tokens": "big"}), "thinking.budget_tokens"),
    (body(system=5), "system"),
    ({"model": FLASH, "max_tokens": 5, "messages": []}, "messages"),
    (body("hi"), "messages[0]"),
    (body({"role": "developer", "content": "x"}), "messages[0].role"),
    (body({"role": "user"}), "messages[0].content"),
    (body({"role": "user", "content": 5}), "messages[0].content"),
    (body({"role": "user", "content": [{"type": "text"}]}), "messages[0].content[0].text"),
    (body({"role": "user", "content": [{"type": "document", "source": 5}]}), "messages[0].content[0].source"),
    (body({"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}), "messages[0].content[0].type"),
    (body({"role": "user", "content": [{"type": "image", "source": "x"}]}), "messages[0].content[0].source"),
])
def test_malformed_bodies_name_the_field(bad, param):
    assert invalid(bad).param == param


@pytest.mark.parametrize("bad", [
    body({"role": "user", "content": "q"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "", "name": "f", "input": {}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "", "content": "r"}]}),
    body({"role": "user", "content": "q"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "", "input": {}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}),
    body({"role": "user", "content": "q"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}},
                                           {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}),
    body(tools=[{"name": "", "input_schema": SCHEMA}]),
    body(tools=[{"name": "a", "input_schema": SCHEMA}, {"name": "a", "input_schema": SCHEMA}]),
    body({"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                   "data": ""}}]}, model=VISION),
], ids=["empty-tool-use-id", "empty-tool-use-name", "duplicate-tool-use-id", "empty-tool-name",
        "duplicate-tool-names", "empty-image-data"])
def test_values_the_upstream_protocol_rejects_are_a_400_not_sent(bad):
    from gateway.normalize import normalize
    from gateway.upstream.cli import encode
    from tests.fake_upstream import validate_body
    try:
        wire = encode(normalize(decode(bad)), "00000000-0000-4000-8000-000000000000")
    except errors.InvalidRequest:
        return                              # refused with a 400: what should happen
    pytest.fail(f"sent upstream: {validate_body(json.loads(json.dumps(wire)))}")


def test_body_must_be_an_object_and_model_must_exist():
    invalid(["not", "an", "object"])
    with pytest.raises(errors.NotFound) as info:
        decode(body(model="claude-0-nonexistent"))
    assert info.value.status == 404 and info.value.anthropic_type == "not_found_error"
    assert info.value.code == "model_not_found"


# ---- EventEncoder: the stream -------------------------------------------------------------------

USAGE_A = Usage(input_tokens=1200, output_tokens=3, cache_read_tokens=1024)


def test_text_stream_is_the_exact_anthropic_sequence():
    frames = encode([TextDelta("Hel"), TextDelta("lo"), Finish(STOP, USAGE_A)], "claude-x", "msg_fixed")
    assert [n for n, _ in frames] == ["message_start", "content_block_start", "content_block_delta",
                                      "content_block_delta", "content_block_stop", "message_delta",
                                      "message_stop"]
    start = frames[0][1]["message"]
    assert (start["id"], start["model"], start["content"], start["stop_reason"]) == ("msg_fixed", "claude-x", [], None)
    assert frames[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"input_tokens": 176, "output_tokens": 3, "cache_read_input_tokens": 1024,
                                       "cache_creation_input_tokens": 0}}
    final = sdk_accumulate(frames)
    assert [b.text for b in final.content] == ["Hello"] and final.usage.input_tokens == 176


def test_first_event_carries_message_start_exactly_once():
    enc = codec.EventEncoder("m")
    first, second = sse(enc.event(TextDelta("a"))), sse(enc.event(TextDelta("b")))
    assert [n for n, _ in first] == ["message_start", "content_block_start", "content_block_delta"]
    assert [n for n, _ in second] == ["content_block_delta"]


def test_thinking_is_closed_with_a_signature_delta_before_the_next_block():
    events = [ReasoningDelta("a"), ReasoningDelta("b"), ToolCallEvent("t1", "f", {"x": [1, "é"]}),
              TextDelta("after"), ReasoningDelta("again"), Finish(TOOL_CALLS, Usage(10, 5))]
    frames = encode(events)
    assert block_order(frames) == ["thinking", "tool_use", "text", "thinking"]
    deltas = [(d["index"], d["delta"]["type"]) for n, d in frames if n == "content_block_delta"]
    assert deltas == [(0, "thinking_delta"), (0, "thinking_delta"), (0, "signature_delta"),
                      (1, "input_json_delta"), (2, "text_delta"), (3, "thinking_delta"), (3, "signature_delta")]
    tool_start = next(d for n, d in frames if n == "content_block_start" and d["index"] == 1)
    assert tool_start["content_block"] == {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    final = sdk_accumulate(frames)
    assert final.content[0].thinking == "ab" and final.content[0].signature == ""
    assert final.content[1].input == {"x": [1, "é"]} and final.stop_reason == "tool_use"


@pytest.mark.parametrize("events,reason", [
    ([TextDelta("x"), Finish(STOP, Usage())], "end_turn"),
    ([TextDelta("x"), Finish(LENGTH, Usage())], "max_tokens"),
    ([Finish(CONTENT_FILTER, Usage())], "refusal"),
    ([ToolCallEvent("t", "f", {}), Finish(STOP, Usage())], "tool_use"),       # a tool was sent
    ([ToolCallEvent("t", "f", {}), Finish(TOOL_CALLS, Usage())], "tool_use"),
    ([ToolCallEvent("t", "f", {}), Finish(LENGTH, Usage())], "max_tokens"),
    ([ReasoningDelta("r"), ToolCallEvent("t", "f", {}), TextDelta("x"), Finish(STOP, Usage())], "tool_use"),
])
def test_stop_reasons(events, reason):
    frames = encode(events)
    assert frames[-2][1]["delta"]["stop_reason"] == reason
    assert sdk_accumulate(frames).stop_reason == reason
    assert codec.message(events, "m")["stop_reason"] == reason


def test_heartbeats_are_pings_and_the_first_one_starts_the_message():
    enc = codec.EventEncoder("m")
    first = sse(enc.heartbeat())
    assert [n for n, _ in first] == ["message_start", "ping"] and first[1][1] == {"type": "ping"}
    assert sse(enc.heartbeat()) == [("ping", {"type": "ping"})]
    rest = sse(enc.event(TextDelta("x")) + enc.heartbeat() + enc.event(Finish(STOP, Usage())))
    assert "message_start" not in [n for n, _ in rest]
    assert [n for n, _ in rest].count("ping") == 1


def test_error_event_uses_the_anthropic_envelope():
    enc = codec.EventEncoder("m")
    frames = sse(enc.error(errors.Overloaded("busy")))
    assert [n for n, _ in frames] == ["message_start", "error"]
    assert frames[1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    anthropic.types.ErrorResponse.model_validate(frames[1][1])
    enc = codec.EventEncoder("m")
    enc.event(TextDelta("partial"))
    assert sse(enc.error(errors.UpstreamError("cut"))) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "cut"}})]


def test_non_ascii_is_sent_as_utf8_not_escaped():
    raw = codec.EventEncoder("m").event(TextDelta("你好 🌍"))
    assert "你好 🌍".encode() in raw


@pytest.mark.parametrize("usage,expected", [
    (Usage(1200, 3, 1024, 0), (176, 1024, 0)),
    (Usage(900, 1, 0, 800), (100, 0, 800)),
    (Usage(2100, 42, 2048, 0), (52, 2048, 0)),
    (Usage(10, 1, 20, 5), (0, 20, 5)),          # inconsistent upstream numbers never go negative
])
def test_input_tokens_are_the_uncached_part(usage, expected):
    obj = codec.usage_object(usage)
    assert (obj["input_tokens"], obj["cache_read_input_tokens"], obj["cache_creation_input_tokens"]) == expected
    assert obj["output_tokens"] == usage.output_tokens


# ---- message(): the non-streamed answer ---------------------------------------------------------

EVENT_LISTS = [
    [TextDelta("Hello"), TextDelta(" world"), Finish(STOP, USAGE_A)],
    [ReasoningDelta("Let "), ReasoningDelta("me think."), TextDelta("4"), Finish(STOP, Usage(10, 30))],
    [TextDelta("Checking."), ToolCallEvent("call_a", "get_weather", {"city": "Paris"}),
     ToolCallEvent("call_b", "get_weather", {"city": "Tokyo"}), Finish(TOOL_CALLS, Usage(2100, 42, 2048))],
    [ToolCallEvent("t", "noargs", {}), Finish(TOOL_CALLS, Usage(5, 1))],
    [Finish(CONTENT_FILTER, Usage(1700, 2, 512))],
    [TextDelta("a"), ReasoningDelta("b"), TextDelta("c"), Finish(LENGTH, Usage(1, 1))],
]


@pytest.mark.parametrize("events", EVENT_LISTS)
def test_message_matches_what_the_sdk_accumulates_from_the_stream(events):
    msg = codec.message(events, "claude-x")
    Message.model_validate(msg)
    streamed = sdk_accumulate(encode(events, "claude-x")).to_dict()
    for key in ("content", "stop_reason", "stop_sequence", "model", "role", "type"):
        assert msg[key] == streamed[key], key
    assert msg["usage"] == {k: streamed["usage"][k] for k in msg["usage"]}


def test_message_merges_deltas_into_blocks():
    msg = codec.message(EVENT_LISTS[1], "m")
    assert msg["content"] == [{"type": "thinking", "thinking": "Let me think.", "signature": ""},
                              {"type": "text", "text": "4"}]
    assert msg["id"].startswith("msg_") and msg["id"] != codec.message(EVENT_LISTS[1], "m")["id"]


def test_message_without_finish_is_an_empty_end_turn():
    msg = codec.message([TextDelta("x")], "m")
    assert msg["stop_reason"] == "end_turn" and msg["usage"]["output_tokens"] == 0


# ---- Flask test client: model_map and other configurations --------------------------------------

MODEL_MAP = {"claude-*haiku*": FLASH, "claude-*": PRO}


def make_client(fake, tmp_path, **overrides):
    c = create_app(gateway_config(fake.url, tmp_path, **overrides)).test_client()
    c.environ_base["HTTP_X_API_KEY"] = LOCAL_KEY
    return c


@pytest.fixture
def mapped(fake, tmp_path):
    return make_client(fake, tmp_path, model_map=MODEL_MAP)


def post(client, b: dict, path: str = "/v1/messages", **headers):
    return client.post(path, json=b, headers={"anthropic-version": "2023-06-01", **headers})


@pytest.mark.parametrize("asked,upstream", [
    ("claude-3-5-haiku-20241022", FLASH),
    ("claude-haiku-4-5-20251001", FLASH),
    ("Claude-3-5-Haiku-Latest", FLASH),                  # globs match in any case
    ("claude-sonnet-4-5-20250929", PRO),
    ("claude-opus-4-1", PRO),
    ("moonshotai/Kimi-K3", VISION),                       # unmapped names resolve as usual
])
def test_model_map_sends_the_target_and_answers_with_the_name_asked(mapped, fake, asked, upstream):
    r = post(mapped, body(model=asked))
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["model"] == asked
    assert fake.requests[-1]["body"]["params"]["model"] == upstream


def test_model_map_applies_to_streams_and_count_tokens(mapped, fake):
    r = post(mapped, body(model="claude-3-5-haiku-20241022", stream=True,
                          messages=[{"role": "user", "content": "[[reasoning]]"}],
                          thinking={"type": "enabled", "budget_tokens": 1024}), "/v1/messages?beta=true")
    frames = sse(r.get_data())
    assert frames[0][1]["message"]["model"] == "claude-3-5-haiku-20241022"
    final = sdk_accumulate(frames)
    assert final.model == "claude-3-5-haiku-20241022" and [b.type for b in final.content] == ["thinking", "text"]
    params = fake.requests[-1]["body"]["params"]
    assert params["model"] == FLASH and params["reasoning_effort"] == "high"
    n = len(fake.requests)
    r = post(mapped, {"model": "claude-sonnet-4-5-20250929", "messages": [{"role": "user", "content": "hi"}]},
             "/v1/messages/count_tokens?beta=true")
    assert r.status_code == 200 and r.get_json()["input_tokens"] > 0
    assert len(fake.requests) == n


def test_model_map_target_outside_the_catalog_is_a_config_error(fake, tmp_path):
    with pytest.raises(ConfigError, match="model_map"):
        create_app(gateway_config(fake.url, tmp_path, model_map={"claude-*": "deepseek/deepseek-v9-typo"}))


def test_model_map_target_that_is_excluded_is_a_config_error(fake, tmp_path):
    with pytest.raises(ConfigError, match="model_map"):
        create_app(gateway_config(fake.url, tmp_path, exclude_models=["deepseek-v4-pro"],
                                  model_map={"claude-*": PRO}))


def test_max_tokens_is_clamped_to_what_upstream_takes(mapped, fake):
    post(mapped, body(max_tokens=10 ** 6))
    assert fake.requests[-1]["body"]["params"]["max_tokens"] == 200000
    post(mapped, body(model="z-ai/glm-5.3-flash", max_tokens=150000))
    assert fake.requests[-1]["body"]["params"]["max_tokens"] == 131072


def test_usage_file_gets_the_full_input_for_anthropic_calls(mapped, fake, tmp_path):
    post(mapped, body(model="claude-3-5-haiku-20241022"))
    r = post(mapped, body(model="claude-3-5-haiku-20241022", stream=True,
                          messages=[{"role": "user", "content": "[[cache]]"}]))
    r.get_data()
    data = mapped.get("/usage").get_json()
    m = data["models"][FLASH]       # counted under the model that answered, not the alias
    text, cache = USAGE["text"], USAGE["cache"]
    assert m["total_requests"] == 2 and m["failed_requests"] == 0
    assert m["prompt_tokens"] == text["input"] + cache["input"]
    assert m["cache_read_tokens"] == text["cache_read"] and m["cache_write_tokens"] == cache["cache_write"]
    assert m["completion_tokens"] == text["output"] + cache["output"]


def test_gateway_errors_on_anthropic_paths_use_the_anthropic_envelope(fake, tmp_path):
    c = create_app(gateway_config(fake.url, tmp_path, max_body_mb=0.01)).test_client()
    cases = [
        (c.post("/v1/messages", json=body()), 401, "authentication_error"),
        (c.post("/v1/messages", json=body(), headers={"x-api-key": "wrong"}), 401, "authentication_error"),
        (c.post("/v1/messages/count_tokens", json=body()), 401, "authentication_error"),
        (c.get("/v1/messages", headers={"x-api-key": LOCAL_KEY}), 405, "invalid_request_error"),
        (c.post("/v1/messages/nope", json=body(), headers={"x-api-key": LOCAL_KEY}), 404, "not_found_error"),
        (c.post("/v1/messages", data=b"", headers={"x-api-key": LOCAL_KEY}), 400, "invalid_request_error"),
        (c.post("/v1/messages", json=body(system="x" * 20000), headers={"x-api-key": LOCAL_KEY}),
         413, "request_too_large"),
    ]
    for resp, status, etype in cases:
        assert resp.status_code == status, resp.get_json()
        assert resp.get_json()["type"] == "error" and resp.get_json()["error"]["type"] == etype
        assert set(resp.get_json()["error"]) == {"type", "message"}
    ok = c.post("/v1/messages", json=body(), headers={"Authorization": f"Bearer {LOCAL_KEY}"})
    assert ok.status_code == 200 and ok.get_json()["content"] == [{"type": "text", "text": "Hello world"}]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_silence_past_idle_timeout_is_a_504_timeout_error(fake, tmp_path, stream):
    c = make_client(fake, tmp_path, commandcode={"idle_timeout": 0.3}, keepalive_interval=5)
    r = post(c, body(stream=stream, messages=[{"role": "user", "content": "[[silence:1]]"}]))
    assert r.status_code == 504
    assert r.get_json() == {"type": "error", "error": {"type": "timeout_error", "message": r.get_json()["error"]["message"]}}
    anthropic.types.ErrorResponse.model_validate(r.get_json())


def test_documents_become_text_the_model_can_read():
    """Claude Code's Read tool returns PDFs and text documents; a refused block would break every
    later turn, so text documents keep their text and a PDF is named in its place."""
    pdf = {"type": "document", "title": "spec.pdf",
           "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    txt = {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain",
                                                             "data": "line one"}}
    content = {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c1"}]}}
    found = {"type": "search_result", "source": "https://x.example", "title": "X",
             "content": [{"type": "text", "text": "found it"}]}
    req = decode(body({"role": "user", "content": [txt, content, found, pdf]}))
    texts = [p.text for p in req.messages[0].parts]
    assert texts[:3] == ["notes\nline one", "c1", "X https://x.example\nfound it"]
    assert "application/pdf" in texts[3] and "spec.pdf" in texts[3]
    result = decode(body({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [pdf, {"type": "text", "text": "read"}]}]}))
    assert "application/pdf" in result.messages[0].parts[0].content
