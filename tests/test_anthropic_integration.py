"""The Anthropic surface end to end: the official ``anthropic`` SDK -> gunicorn (2 workers) -> fake upstream.

Every streamed event is checked against the SDK's own event models (``anthropic.types.Raw*Event``)
and against the ordering rules the SDK's accumulator relies on; usage is checked in Anthropic's
meaning (``input_tokens`` is the uncached part only).
"""
from __future__ import annotations

import base64
import json
import struct
import zlib

import anthropic
import openai
import pytest
import requests
from anthropic.types import (ErrorResponse, Message, RawContentBlockDeltaEvent,
                             RawContentBlockStartEvent, RawContentBlockStopEvent,
                             RawMessageDeltaEvent, RawMessageStartEvent, RawMessageStopEvent,
                             RawMessageStreamEvent)
from pydantic import TypeAdapter

from tests.conftest import LOCAL_KEY, gateway_config, usage_delta
from tests.fake_upstream import UNICODE_TEXT, USAGE

FLASH = "deepseek/deepseek-v4-flash"
VISION = "moonshotai/Kimi-K3"
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5E"
           "rkJggg==")
PNG_BLOCK = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
WEATHER = [{"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]
READ_FILE = [{"name": "read_file", "description": "Read a file",
              "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}]

EVENT_ADAPTER = TypeAdapter(RawMessageStreamEvent)
EVENT_CLASSES = {"message_start": RawMessageStartEvent, "content_block_start": RawContentBlockStartEvent,
                 "content_block_delta": RawContentBlockDeltaEvent,
                 "content_block_stop": RawContentBlockStopEvent, "message_delta": RawMessageDeltaEvent,
                 "message_stop": RawMessageStopEvent}
DELTAS_FOR_BLOCK = {"text": {"text_delta"}, "thinking": {"thinking_delta", "signature_delta"},
                    "tool_use": {"input_json_delta"}}


@pytest.fixture
def claude(gateway, fake):
    return anthropic.Anthropic(base_url=gateway.url, api_key=LOCAL_KEY, max_retries=0, timeout=30)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sent(fake) -> dict:
    """``params`` of the last request the fake upstream received."""
    return fake.requests[-1]["body"]["params"]


def expected_usage(scenario: str) -> dict:
    """The fake's usage for ``scenario`` in Anthropic's terms (input_tokens = uncached part)."""
    u = USAGE[scenario]
    return {"input_tokens": u["input"] - u["cache_read"] - u["cache_write"], "output_tokens": u["output"],
            "cache_read_input_tokens": u["cache_read"], "cache_creation_input_tokens": u["cache_write"]}


def usage_of(obj) -> dict:
    return {k: getattr(obj, k) for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                         "cache_creation_input_tokens")}


def png(width: int, height: int) -> str:
    """A real (blank, grayscale) PNG of the given size, base64: count_tokens reads its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


# ---- stream validation --------------------------------------------------------------------------

def validate_event(data: dict):
    """One event's JSON, validated by the SDK's models: the exact class for its type and the union."""
    cls = EVENT_CLASSES[data["type"]]
    cls.model_validate(data)
    parsed = EVENT_ADAPTER.validate_python(data)
    assert isinstance(parsed, cls), (data, type(parsed))
    return parsed


def check_sequence(events: list) -> list[str]:
    """Assert the ordering invariants of an Anthropic stream; return the block types in order.

    message_start first, message_stop last, message_delta right before it; blocks opened with
    consecutive indexes from 0, one at a time (each closed before the next opens); every delta
    carries the open block's index and a delta type that fits that block; a thinking block ends
    with its signature_delta.
    """
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    assert types[-2] == "message_delta" and types.count("message_delta") == 1, types
    assert types.count("message_start") == 1 and types.count("message_stop") == 1, types
    blocks: list[str] = []
    deltas: list[str] = []
    open_index = None
    for ev in events[1:-2]:
        if ev.type == "content_block_start":
            assert open_index is None, f"block {ev.index} opened while {open_index} is open"
            assert ev.index == len(blocks), (ev.index, blocks)
            open_index = ev.index
            blocks.append(ev.content_block.type)
            deltas = []
        elif ev.type == "content_block_delta":
            assert ev.index == open_index, (ev.index, open_index)
            assert ev.delta.type in DELTAS_FOR_BLOCK[blocks[-1]], (blocks[-1], ev.delta.type)
            deltas.append(ev.delta.type)
        elif ev.type == "content_block_stop":
            assert ev.index == open_index, (ev.index, open_index)
            if blocks[-1] == "thinking":
                assert deltas[-1] == "signature_delta" and deltas.count("signature_delta") == 1, deltas
                assert deltas[0] == "thinking_delta", deltas
            if blocks[-1] == "tool_use":
                assert deltas and set(deltas) == {"input_json_delta"}, deltas
            open_index = None
        else:
            pytest.fail(f"unexpected event {ev.type} inside the message")
    assert open_index is None, "a block was never closed"
    return blocks


def sdk_stream_events(claude, **kw) -> list:
    """``messages.create(stream=True)``: every event typed by the SDK, validated and ordered."""
    events = []
    for ev in claude.messages.create(stream=True, **kw):
        assert isinstance(ev, EVENT_CLASSES[ev.type]), type(ev)
        validate_event(ev.to_dict())
        events.append(ev)
    check_sequence(events)
    return events


def parse_sse(text: str) -> list[tuple[str, dict]]:
    """``(event name, data)`` pairs of an SSE body; every event must have both lines."""
    out = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name, frame
        out.append((name, data))
    return out


def post_raw(gateway, body: dict, path: str = "/v1/messages", **headers) -> requests.Response:
    return requests.post(gateway.url + path, json=body, timeout=15,
                         headers={"x-api-key": LOCAL_KEY, "anthropic-version": "2023-06-01", **headers})


# ---- plain answers -------------------------------------------------------------------------------

def test_text_answer_with_uncached_input_usage(claude, fake):
    raw = claude.messages.with_raw_response.create(model="deepseek-v4-flash", max_tokens=256,
                                                   system="Be brief.", messages=user("hi"))
    Message.model_validate(raw.json())         # the wire object, validated by the SDK's model
    r = raw.parse()
    assert [(b.type, b.text) for b in r.content] == [("text", "Hello world")]
    assert r.stop_reason == "end_turn" and r.stop_sequence is None
    assert r.role == "assistant" and r.type == "message" and r.id.startswith("msg_")
    assert r.model == "deepseek-v4-flash"          # the name asked for, not the catalog id
    assert usage_of(r.usage) == expected_usage("text")
    assert r.usage.input_tokens == 176            # 1200 upstream minus 1024 cache reads
    params = sent(fake)
    assert params["model"] == FLASH and params["system"] == "Be brief." and params["max_tokens"] == 256


def test_cache_writes_are_reported_beside_input_not_inside_it(claude, fake):
    r = claude.messages.create(model=FLASH, max_tokens=64, messages=user("[[cache]]"))
    assert r.content[0].text == "cached"
    assert usage_of(r.usage) == expected_usage("cache")
    assert (r.usage.input_tokens, r.usage.cache_creation_input_tokens) == (100, 800)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")      # the SDK warns about old claude ids
def test_model_field_echoes_dated_claude_ids(claude, fake):
    r = claude.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=64, messages=user("hi"))
    assert r.model == "claude-sonnet-4-5-20250929"
    assert sent(fake)["model"] == "claude-sonnet-4-6"


def test_pause_turn_is_one_message_with_summed_usage(claude, fake):
    r = claude.messages.create(model=FLASH, max_tokens=64, messages=user("[[pause_turn]]"))
    assert [b.text for b in r.content] == ["Part one. Part two."]
    assert usage_of(r.usage) == expected_usage("pause_turn")


# ---- streams: every event validated --------------------------------------------------------------

@pytest.mark.parametrize("scenario,blocks,stop_reason", [
    ("text", ["text"], "end_turn"),
    ("unicode", ["text"], "end_turn"),
    ("reasoning", ["thinking", "text"], "end_turn"),
    ("tool_call", ["tool_use"], "tool_use"),
    ("parallel_tools", ["text", "tool_use", "tool_use"], "tool_use"),
    ("string_input", ["tool_use", "tool_use"], "tool_use"),
    ("server_tool", ["text"], "end_turn"),
    ("cache", ["text"], "end_turn"),
    ("length", ["text"], "max_tokens"),
    ("raw_truncation", ["text"], "max_tokens"),
    ("content_filter", [], "refusal"),
    ("garbage", ["text"], "end_turn"),
])
def test_stream_events_match_the_sdk_types_and_order(claude, fake, scenario, blocks, stop_reason):
    tools = WEATHER + READ_FILE if "tool" in scenario or scenario == "string_input" else []
    events = sdk_stream_events(claude, model="deepseek-v4-flash", max_tokens=512,
                               messages=user(f"[[{scenario}]]"), tools=tools)
    assert check_sequence(events) == blocks
    start, delta = events[0], events[-2]
    assert start.message.model == "deepseek-v4-flash" and start.message.content == []
    assert start.message.id.startswith("msg_") and start.message.role == "assistant"
    assert delta.delta.stop_reason == stop_reason
    # message_delta usage is the cumulative total, input_tokens the uncached part
    assert usage_of(delta.usage) == expected_usage(scenario)


def test_raw_sse_lines_name_their_events_and_validate(gateway, fake):
    resp = post_raw(gateway, {"model": FLASH, "max_tokens": 64, "stream": True,
                              "messages": user("[[reasoning]]")})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = parse_sse(resp.text)
    typed = [validate_event(data) for _, data in events]
    assert check_sequence(typed) == ["thinking", "text"]
    assert len({data["message"]["id"] for name, data in events if name == "message_start"}) == 1


def run_stream(manager) -> tuple[list, list, object]:
    """Run a ``messages.stream(...)`` manager to its end.

    Returns (the SDK's raw events, each validated and checked for order; the helper events it
    derived: text, thinking, signature, input_json; the final message).
    """
    raw, derived = [], []
    with manager as stream:
        for ev in stream:
            if ev.type in EVENT_CLASSES:
                validate_event(ev.to_dict())
                raw.append(ev)
            else:
                derived.append(ev)
        final = stream.get_final_message()
    check_sequence(raw)
    return raw, derived, final


def test_stream_helper_text_and_final_message(claude, fake):
    raw, derived, final = run_stream(claude.messages.stream(model=FLASH, max_tokens=64,
                                                            messages=user("[[unicode]]")))
    assert "".join(ev.text for ev in derived if ev.type == "text") == UNICODE_TEXT
    assert [b.text for b in final.content] == [UNICODE_TEXT]
    assert final.stop_reason == "end_turn" and final.model == FLASH
    assert usage_of(final.usage) == expected_usage("unicode")


def test_line_separator_characters_survive_the_stream(claude, gateway, fake):
    odd = "a\u2028b\u2029c\x85d \"quoted\" \\ back\nslash\ttab é 🚀"
    raw, derived, final = run_stream(claude.messages.stream(model=FLASH, max_tokens=64,
                                                            messages=user(f"[[echo]] {odd}")))
    assert final.content[0].text == odd
    resp = post_raw(gateway, {"model": FLASH, "max_tokens": 64, "stream": True,
                              "messages": user(f"[[echo]] {odd}")})
    deltas = [d["delta"]["text"] for n, d in parse_sse(resp.text) if n == "content_block_delta"]
    assert "".join(deltas) == odd


def test_stream_helper_thinking_then_text(claude, fake):
    raw, derived, final = run_stream(claude.messages.stream(
        model=FLASH, max_tokens=4096, messages=user("[[reasoning]]"),
        thinking={"type": "enabled", "budget_tokens": 2048}))
    assert [ev.delta.type for ev in raw if ev.type == "content_block_delta"] == [
        "thinking_delta", "signature_delta", "text_delta"]
    assert [ev.type for ev in derived] == ["thinking", "signature", "text"]
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Let me think." and final.content[0].signature == ""
    assert final.content[1].text == "4"
    assert usage_of(final.usage) == expected_usage("reasoning")
    assert sent(fake)["reasoning_effort"] == "high"     # flash takes high/max only


def test_stream_helper_single_tool_use(claude, fake):
    raw, derived, final = run_stream(claude.messages.stream(
        model=FLASH, max_tokens=256, tools=READ_FILE, messages=user("[[tool_call]] read a.txt")))
    assert json.loads("".join(ev.partial_json for ev in derived if ev.type == "input_json")) == \
        {"file_path": "a.txt"}
    assert final.stop_reason == "tool_use"
    (block,) = final.content
    assert (block.type, block.id, block.name, block.input) == ("tool_use", "call_1", "read_file",
                                                             {"file_path": "a.txt"})
    assert sent(fake)["tools"] == [{"name": "read_file", "description": "Read a file",
                                    "input_schema": READ_FILE[0]["input_schema"]}]


def test_stream_helper_parallel_tool_use(claude, fake):
    raw, derived, final = run_stream(claude.messages.stream(
        model=FLASH, max_tokens=256, tools=WEATHER, messages=user("[[parallel_tools]]")))
    json_deltas = [(ev.index, ev.delta.partial_json) for ev in raw
                   if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta"]
    assert [(i, json.loads(p)) for i, p in json_deltas] == [(1, {"city": "Paris"}), (2, {"city": "Tokyo"})]
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Checking."
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [
        ("call_a", "get_weather", {"city": "Paris"}), ("call_b", "get_weather", {"city": "Tokyo"})]
    assert usage_of(final.usage) == expected_usage("parallel_tools")


@pytest.mark.parametrize("scenario,stop_reason", [("length", "max_tokens"), ("content_filter", "refusal")])
def test_truncation_and_refusal_streamed_and_not(claude, fake, scenario, stop_reason):
    r = claude.messages.create(model=FLASH, max_tokens=64, messages=user(f"[[{scenario}]]"))
    assert r.stop_reason == stop_reason
    raw, derived, final = run_stream(claude.messages.stream(model=FLASH, max_tokens=64,
                                                            messages=user(f"[[{scenario}]]")))
    assert final.stop_reason == stop_reason
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in r.content]
    assert usage_of(final.usage) == usage_of(r.usage) == expected_usage(scenario)


# ---- tools over several turns --------------------------------------------------------------------

def test_tool_round_trip_sends_results_before_text_with_names(claude, fake):
    question = {"role": "user", "content": "[[parallel_tools]] weather in Paris and Tokyo?"}
    first = claude.messages.create(model=FLASH, max_tokens=256, tools=WEATHER, messages=[question])
    assert first.stop_reason == "tool_use"
    assistant = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I need both cities.", "signature": "RXFRQkNrWUlCUmdDS2tE"},
        {"type": "redacted_thinking", "data": "b3BhcXVlIHJlYXNvbmluZw=="},
        *first.content]}                        # the SDK's own blocks, sent back as returned
    results = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_a", "content": "18°C, sunny"},
        {"type": "tool_result", "tool_use_id": "call_b", "is_error": True,
         "content": [{"type": "text", "text": "weather service down"},
                     {"type": "text", "text": "try later"}]},
        {"type": "text", "text": "[[echo]] summarise"}]}
    r = claude.messages.create(model=FLASH, max_tokens=256, tools=WEATHER,
                               messages=[question, assistant, results])
    assert r.content[0].text == "summarise" and r.stop_reason == "end_turn"
    wire = sent(fake)["messages"]
    assert [m["role"] for m in wire] == ["user", "assistant", "tool", "user"]
    assert wire[1]["content"] == [
        {"type": "reasoning", "text": "I need both cities."},       # no signature, no redacted block
        {"type": "text", "text": "Checking."},
        {"type": "tool-call", "toolCallId": "call_a", "toolName": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool-call", "toolCallId": "call_b", "toolName": "get_weather", "input": {"city": "Tokyo"}}]
    assert wire[2]["content"] == [
        {"type": "tool-result", "toolCallId": "call_a", "toolName": "get_weather",
         "output": {"type": "text", "value": "18°C, sunny"}},
        {"type": "tool-result", "toolCallId": "call_b", "toolName": "get_weather",
         "output": {"type": "error-text", "value": "weather service down\ntry later"}}]
    assert wire[3]["content"] == [{"type": "text", "text": "[[echo]] summarise"}]
    assert "RXFRQkNrWUlCUmdDS2tE" not in json.dumps(fake.requests[-1]["body"])


def test_agent_loop_survives_a_tool_use_id_used_again_in_a_later_turn(claude, fake):
    history = [{"role": "user", "content": "[[tool_call]] read a.txt"}]
    for result in ("first", "second"):
        turn = claude.messages.create(model=FLASH, max_tokens=256, tools=READ_FILE, messages=history)
        assert turn.stop_reason == "tool_use" and turn.content[0].id == "call_1"
        history += [{"role": "assistant", "content": turn.content},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                  "content": result}]}]
        if result == "first":     # the next turn calls the tool again, with the same id
            history[-1]["content"].append({"type": "text", "text": "[[tool_call]] and again"})
    try:
        # Claude Code's shape: the last user turn holds only the tool result
        claude.messages.create(model=FLASH, max_tokens=64, tools=READ_FILE, messages=history)
        values = [p["output"]["value"] for m in sent(fake)["messages"] if m["role"] == "tool"
                  for p in m["content"]]
        violations = list(fake.violations)
    finally:
        del fake.violations[:]    # reported by the assertion below, not as a teardown error
    assert values == ["first", "second"] and violations == []


def test_streamed_final_message_can_be_sent_back(claude, fake):
    raw, derived, final = run_stream(claude.messages.stream(
        model=FLASH, max_tokens=256, tools=READ_FILE, messages=user("[[tool_call]] read a.txt")))
    history = [{"role": "user", "content": "[[tool_call]] read a.txt"},
               {"role": "assistant", "content": final.content},
               {"role": "user", "content": [
                   {"type": "tool_result", "tool_use_id": final.content[0].id, "content": []},
                   {"type": "text", "text": "[[echo]] go on"}]}]
    r = claude.messages.create(model=FLASH, max_tokens=64, tools=READ_FILE, messages=history)
    assert r.content[0].text == "go on"
    assert sent(fake)["messages"][2]["content"][0]["output"] == {"type": "text", "value": "(empty)"}


def test_reserved_tool_search_name_is_mapped_both_ways(claude, fake):
    tools = [{"name": "tool_search", "description": "find tools",
              "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
    r = claude.messages.create(model=FLASH, max_tokens=64, tools=tools, messages=user("[[tool_search]]"))
    assert r.content[0].name == "tool_search" and r.stop_reason == "tool_use"
    assert sent(fake)["tools"][0]["name"] == "search_tools"
    history = [*user("[[tool_search]]"), {"role": "assistant", "content": r.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": r.content[0].id,
                                             "content": "none"}, {"type": "text", "text": "ok"}]}]
    claude.messages.create(model=FLASH, max_tokens=64, tools=tools, messages=history)
    wire = sent(fake)["messages"]
    assert wire[1]["content"][0]["toolName"] == "search_tools"
    assert wire[2]["content"][0]["toolName"] == "search_tools"


def test_tool_choice_none_sends_no_tools_and_ignored_fields_are_accepted(claude, fake):
    r = claude.messages.create(model=FLASH, max_tokens=64, tools=WEATHER, tool_choice={"type": "none"},
                               messages=user("hi"), stop_sequences=["STOP"], metadata={"user_id": "someone"},
                               # this SDK release no longer has the sampling parameters as arguments
                               extra_body={"temperature": 0.3, "top_k": 5, "top_p": 0.9})
    assert r.content[0].text == "Hello world"
    params = sent(fake)
    assert params["tools"] == [] and params["temperature"] == 0.3
    assert not {"stop_sequences", "top_k", "top_p", "metadata"} & set(params)
    claude.messages.create(model=FLASH, max_tokens=64, tools=WEATHER,
                           tool_choice={"type": "tool", "name": "get_weather"}, messages=user("hi"))
    assert [t["name"] for t in sent(fake)["tools"]] == ["get_weather"]


def test_server_tools_are_dropped_client_tools_kept(claude, fake):
    tools = [*WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]
    claude.messages.create(model=FLASH, max_tokens=64, tools=tools, messages=user("hi"))
    assert [t["name"] for t in sent(fake)["tools"]] == ["get_weather"]


# ---- images -------------------------------------------------------------------------------------

def test_base64_image_reaches_upstream_inline(claude, fake):
    content = [{"type": "text", "text": "[[image]] what is this"}, PNG_BLOCK]
    r = claude.messages.create(model=VISION, max_tokens=64, messages=[{"role": "user", "content": content}])
    assert r.content[0].text == "images=1"
    assert sent(fake)["messages"][0]["content"] == [
        {"type": "text", "text": "[[image]] what is this"},
        {"type": "image", "image": f"data:image/png;base64,{PNG_B64}", "mimeType": "image/png"}]


def test_image_in_tool_result_moves_to_a_following_user_turn(claude, fake):
    tools = [{"name": "screenshot", "description": "Take one", "input_schema": {"type": "object"}}]
    history = [{"role": "user", "content": "take a screenshot"},
               {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_shot",
                                                  "name": "screenshot", "input": {}}]},
               {"role": "user", "content": [
                   {"type": "tool_result", "tool_use_id": "toolu_shot",
                    "content": [{"type": "text", "text": "captured"}, PNG_BLOCK]},
                   {"type": "text", "text": "[[image]] what do you see"}]}]
    r = claude.messages.create(model=VISION, max_tokens=64, tools=tools, messages=history)
    assert r.content[0].text == "images=1"
    wire = sent(fake)["messages"]
    assert [m["role"] for m in wire] == ["user", "assistant", "tool", "user"]
    assert wire[2]["content"] == [{"type": "tool-result", "toolCallId": "toolu_shot", "toolName": "screenshot",
                                   "output": {"type": "text", "value": "captured\n[image 1 attached below]"}}]
    assert wire[3]["content"] == [
        {"type": "image", "image": f"data:image/png;base64,{PNG_B64}", "mimeType": "image/png"},
        {"type": "text", "text": "[[image]] what do you see"}]


def test_url_image_source_is_refused_by_default(claude, fake):
    content = [{"type": "text", "text": "look"},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=VISION, max_tokens=64, messages=[{"role": "user", "content": content}])
    err = info.value
    assert err.status_code == 400 and err.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[1].source.url" in err.body["error"]["message"]
    assert "data: URL" in err.body["error"]["message"]
    assert fake.requests == []


def test_image_for_a_text_only_model_is_a_400(claude, fake):
    with pytest.raises(anthropic.BadRequestError, match="does not accept images") as info:
        claude.messages.create(model=FLASH, max_tokens=64,
                               messages=[{"role": "user", "content": [PNG_BLOCK]}])
    ErrorResponse.model_validate(info.value.body)
    assert fake.requests == []


# ---- system, cache_control, beta ----------------------------------------------------------------

def test_system_blocks_keep_cache_control_as_plain_ephemeral(claude, fake):
    system = [{"type": "text", "text": "You are a coding agent.",
               "cache_control": {"type": "ephemeral", "ttl": "1h"}},
              {"type": "text", "text": "Be brief."}]
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]}]
    tools = [{**WEATHER[0], "cache_control": {"type": "ephemeral"}}]
    r = claude.messages.create(model=FLASH, max_tokens=64, system=system, messages=messages, tools=tools,
                               extra_headers={"anthropic-beta": "prompt-caching-2024-07-31,"
                                                                "made-up-feature-2099-01-01"})
    assert r.content[0].text == "Hello world"
    params = sent(fake)
    assert params["system"] == [{"type": "text", "text": "You are a coding agent.",
                                 "cache_control": {"type": "ephemeral"}},
                                {"type": "text", "text": "Be brief."}]
    assert params["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                                "input_schema": WEATHER[0]["input_schema"]}]
    assert "anthropic-beta" not in fake.requests[-1]["headers"]


def test_unknown_cache_control_fields_and_beta_query_never_fail(gateway, fake):
    body = {"model": FLASH, "max_tokens": 64,
            "system": [{"type": "text", "text": "Sys.",
                        "cache_control": {"type": "ephemeral", "ttl": "1h", "scope": "global", "x": [1]}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "future": True}}]}],
            "context_management": {"edits": []}, "service_tier": "auto"}
    r = post_raw(gateway, body, "/v1/messages?beta=true",
                 **{"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,nonsense"})
    assert r.status_code == 200, r.text
    Message.model_validate(r.json())
    assert sent(fake)["system"] == [{"type": "text", "text": "Sys.", "cache_control": {"type": "ephemeral"}}]


def test_beta_messages_client(claude, fake):
    # Claude Code posts to /v1/messages?beta=true; this SDK release's beta client does not add the
    # query, so it is added here as Claude Code sends it
    raw = claude.beta.messages.with_raw_response.create(model=FLASH, max_tokens=64, messages=user("hi"),
                                                        betas=["made-up-beta-2099-01-01"],
                                                        extra_query={"beta": "true"})
    assert raw.http_request.url.params["beta"] == "true"
    assert raw.http_request.headers["anthropic-beta"] == "made-up-beta-2099-01-01"
    r = raw.parse()
    assert r.content[0].text == "Hello world" and r.stop_reason == "end_turn"
    events, derived, final = run_stream(claude.beta.messages.stream(
        model=FLASH, max_tokens=64, messages=user("[[reasoning]]"),
        betas=["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"], extra_query={"beta": "true"}))
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert "anthropic-beta" not in fake.requests[-1]["headers"]


def test_blank_system_still_sends_a_system(claude, fake):
    claude.messages.create(model=FLASH, max_tokens=64, system=[{"type": "text", "text": "  "}],
                           messages=user("hi"))
    assert isinstance(sent(fake)["system"], str) and sent(fake)["system"].strip()


# ---- thinking -> reasoning effort ----------------------------------------------------------------

@pytest.mark.parametrize("model,budget,effort", [
    (FLASH, 1024, "high"),                  # low, clamped to what flash takes
    (FLASH, 100000, "max"),
    (VISION, 2000, "low"),
    ("claude-sonnet-4-6", 10000, "medium"),
    ("moonshotai/Kimi-K2.6", 50000, None),   # a model with no efforts gets none
])
def test_thinking_budget_becomes_an_effort_the_model_accepts(claude, fake, model, budget, effort):
    claude.messages.create(model=model, max_tokens=budget + 1000, messages=user("hi"),
                           thinking={"type": "enabled", "budget_tokens": budget})
    assert sent(fake).get("reasoning_effort") == effort


def test_thinking_disabled_sends_no_effort(claude, fake):
    claude.messages.create(model=FLASH, max_tokens=64, messages=user("hi"), thinking={"type": "disabled"})
    assert "reasoning_effort" not in sent(fake)


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario,exc,status,etype", [
    ("http_401", anthropic.AuthenticationError, 401, "authentication_error"),
    ("http_400_credits", anthropic.PaymentRequiredError, 402, "billing_error"),
    ("http_402", anthropic.PaymentRequiredError, 402, "billing_error"),
    ("http_403_model", anthropic.PermissionDeniedError, 403, "permission_error"),
    ("http_403_premium", anthropic.PermissionDeniedError, 403, "permission_error"),
    ("http_429_window", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("http_429_throttle", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("http_400_validation", anthropic.BadRequestError, 400, "invalid_request_error"),
    ("http_500", anthropic.InternalServerError, 502, "api_error"),
    ("http_502_html", anthropic.InternalServerError, 502, "api_error"),
    ("http_529", anthropic.OverloadedError, 529, "overloaded_error"),
    # in-band errors before any output become real HTTP statuses
    ("error_first", anthropic.PaymentRequiredError, 402, "billing_error"),
    ("error_first:string", anthropic.OverloadedError, 529, "overloaded_error"),
    ("error_first:429", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("error_first:model", anthropic.PermissionDeniedError, 403, "permission_error"),
    ("truncated_empty", anthropic.InternalServerError, 502, "api_error"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_map_to_sdk_exceptions(claude, fake, scenario, exc, status, etype, stream):
    with pytest.raises(exc) as info:
        result = claude.messages.create(model=FLASH, max_tokens=64, messages=user(f"[[{scenario}]]"),
                                        stream=stream)
        if stream:
            list(result)
    err = info.value
    assert type(err) is exc and err.status_code == status
    envelope = ErrorResponse.model_validate(err.body)
    assert envelope.type == "error" and envelope.error.type == etype
    assert "<html>" not in err.message
    if scenario == "http_429_window":
        assert 0 < int(err.response.headers["retry-after"]) <= 120
    if scenario.endswith("model"):
        assert "not included in your plan" in envelope.error.message
    assert LOCAL_KEY not in str(err) and "user_test" not in str(err)


@pytest.mark.parametrize("scenario,got,etype", [
    ("error_after_text", "Hello", "overloaded_error"),
    ("truncated", "Hel", "api_error"),
    ("truncated:abrupt", "Hel", "api_error"),
    ("finish_error", "Some text", "api_error"),
])
def test_failure_after_output_is_an_error_event(claude, gateway, fake, scenario, got, etype):
    texts = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model=FLASH, max_tokens=64, messages=user(f"[[{scenario}]]")) as s:
            for ev in s:
                if ev.type in EVENT_CLASSES:
                    validate_event(ev.to_dict())
                elif ev.type == "text":
                    texts.append(ev.text)
        # reaching here would mean a broken answer was reported as a success
    assert "".join(texts) == got
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == etype
    ErrorResponse.model_validate(info.value.body)
    # the raw stream: the answer so far, then `event: error`, never message_delta/message_stop
    resp = post_raw(gateway, {"model": FLASH, "max_tokens": 64, "stream": True,
                              "messages": user(f"[[{scenario}]]")})
    events = parse_sse(resp.text)
    names = [name for name, _ in events]
    assert resp.status_code == 200 and names[0] == "message_start" and names[-1] == "error"
    assert "message_delta" not in names and "message_stop" not in names
    for name, data in events[:-1]:
        validate_event(data)
    assert events[-1][1]["error"]["type"] == etype


def test_non_streamed_failure_after_output_is_a_real_status(claude, fake):
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model=FLASH, max_tokens=64, messages=user("[[error_after_text]]"))
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model=FLASH, max_tokens=64, messages=user("[[truncated]]"))
    assert info.value.status_code == 502 and info.value.body["error"]["type"] == "api_error"


def test_unknown_model_is_not_found(claude, fake):
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="claude-0-nonexistent", max_tokens=64, messages=user("hi"))
    assert info.value.body["error"]["type"] == "not_found_error"
    assert "claude-0-nonexistent" in info.value.body["error"]["message"]
    assert fake.requests == []


def test_malformed_requests_are_invalid_request_errors(claude, gateway, fake):
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=FLASH, max_tokens=64, messages=[{"role": "user", "content": [
            {"type": "video", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0]" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=FLASH, max_tokens=64, messages=user("hi"),
                               extra_body={"temperature": 1.5})
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=FLASH, max_tokens=64, messages=[])
    r = requests.post(gateway.url + "/v1/messages", data="{not json", timeout=5,
                      headers={"x-api-key": LOCAL_KEY, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert ErrorResponse.model_validate(r.json()).error.type == "invalid_request_error"
    assert "not valid JSON" in r.json()["error"]["message"]
    r = post_raw(gateway, {"model": FLASH, "messages": user("hi")})         # no max_tokens
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    assert fake.requests == []


def test_wrong_local_key_is_an_authentication_error(gateway, fake):
    for kw in ({"api_key": "wrong"}, {"auth_token": "wrong"}):
        bad = anthropic.Anthropic(base_url=gateway.url, max_retries=0, timeout=10, **kw)
        with pytest.raises(anthropic.AuthenticationError) as info:
            bad.messages.create(model=FLASH, max_tokens=64, messages=user("hi"))
        assert info.value.body["error"]["type"] == "authentication_error"
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.count_tokens(model=FLASH, messages=user("hi"))
    ok = anthropic.Anthropic(base_url=gateway.url, auth_token=LOCAL_KEY, max_retries=0, timeout=10)
    assert ok.messages.create(model=FLASH, max_tokens=64, messages=user("hi")).content[0].text == "Hello world"
    assert len(fake.requests) == 1


# ---- count_tokens -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_count_tokens_grows_with_text_tools_and_images_without_calling_upstream(claude, fake):
    def count(**kw) -> int:
        n = claude.messages.count_tokens(**{"model": FLASH, "messages": user("hello there"), **kw})
        assert isinstance(n.input_tokens, int) and n.input_tokens > 0
        return n.input_tokens

    base = count()
    assert count(messages=user("hello there " + "and some more words " * 40)) > base + 40
    assert count(system="You are a careful assistant who answers briefly.") > base
    assert count(tools=WEATHER) > base
    assert count(tools=WEATHER + READ_FILE) > count(tools=WEATHER)
    history = [*user("read a.txt"),
               {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file",
                                                  "input": {"file_path": "a.txt"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                             "content": "file contents " * 30}]}]
    assert count(messages=history, tools=READ_FILE) > count(messages=user("read a.txt"), tools=READ_FILE)
    text = {"type": "text", "text": "what is this"}
    big = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(1000, 1000)}}
    without = count(model=VISION, messages=[{"role": "user", "content": [text]}])
    with_image = count(model=VISION, messages=[{"role": "user", "content": [text, big]}])
    assert with_image - without >= 1000          # 1000 x 1000 px is about 1334 tokens
    assert count(model="claude-sonnet-4-5-20250929") == base
    assert fake.requests == []


def test_count_tokens_answers_every_well_formed_request(claude, fake):
    """Clients size their context with it: images count on a text-only model, image URLs are
    counted without being fetched, an unknown model id and a history with no user turn are
    counted too; nothing reaches upstream."""
    def count(**kw) -> int:
        return claude.messages.count_tokens(**{"model": FLASH, "messages": user("hi"), **kw}).input_tokens

    text = {"type": "text", "text": "what is this"}
    big = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(1000, 1000)}}
    url_image = {"type": "image", "source": {"type": "url", "url": "http://127.0.0.1:9/never-fetched.png"}}
    assert count(messages=[{"role": "user", "content": [text, big]}]) - \
        count(messages=[{"role": "user", "content": [text]}]) >= 1000      # FLASH has no vision
    assert count(model=VISION, messages=[{"role": "user", "content": [text, url_image]}]) > count()
    assert count(model="claude-opus-9-future") == count()
    assert count(messages=[{"role": "assistant", "content": "only me"}]) > 0
    assert count(messages=[{"role": "user", "content": "q"}, {"role": "system", "content": "note " * 50}]) > \
        count(messages=[{"role": "user", "content": "q"}]) + 40
    assert fake.requests == []


def test_count_tokens_errors_use_the_anthropic_envelope(claude, fake):
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.count_tokens(model=FLASH, messages=[{"role": "user", "content": 5}])
    ErrorResponse.model_validate(info.value.body)
    assert fake.requests == []


# ---- /usage -------------------------------------------------------------------------------------

def test_usage_counts_anthropic_requests_like_openai(gateway, claude, openai_client, fake):
    a_model, o_model = "zai-org/GLM-5.1", "zai-org/GLM-5.2-Fast"
    with usage_delta(gateway, a_model, o_model) as got:
        claude.messages.create(model=a_model, max_tokens=64, messages=user("[[text]]"))
        run_stream(claude.messages.stream(model=a_model, max_tokens=64, messages=user("[[cache]]")))
        with pytest.raises(anthropic.RateLimitError):
            claude.messages.create(model=a_model, max_tokens=64, messages=user("[[http_429_throttle]]"))
        openai_client.chat.completions.create(model=o_model, messages=user("[[text]]"))
        list(openai_client.chat.completions.create(model=o_model, messages=user("[[cache]]"), stream=True))
        with pytest.raises(openai.RateLimitError):
            openai_client.chat.completions.create(model=o_model, messages=user("[[http_429_throttle]]"))
    got_a, got_o = got[a_model], got[o_model]
    assert got_a == got_o
    text, cache = USAGE["text"], USAGE["cache"]
    assert got_a["total_requests"] == 3 and got_a["failed_requests"] == 1
    assert got_a["prompt_tokens"] == text["input"] + cache["input"]            # full input, cache included
    assert got_a["cache_read_tokens"] == text["cache_read"] + cache["cache_read"]
    assert got_a["cache_write_tokens"] == text["cache_write"] + cache["cache_write"]
    assert got_a["completion_tokens"] == text["output"] + cache["output"]


# ---- keep-alive ---------------------------------------------------------------------------------

def test_silent_stream_carries_ping_events(gateway, fake):
    resp = post_raw(gateway, {"model": FLASH, "max_tokens": 64, "stream": True,
                              "messages": user("[[silence:1.5]]")})
    assert resp.status_code == 200
    assert 'event: ping\ndata: {"type":"ping"}\n\n' in resp.text
    events = parse_sse(resp.text)
    names = [name for name, _ in events]
    pings = [i for i, name in enumerate(names) if name == "ping"]
    # keepalive_interval is 0.5 s in the test config: about three during 1.5 s of silence
    assert len(pings) >= 2 and names[0] == "message_start"
    assert pings[-1] < names.index("content_block_start")
    assert all(events[i][1] == {"type": "ping"} for i in pings)
    assert check_sequence([validate_event(d) for n, d in events if n != "ping"]) == ["text"]


def test_sdk_skips_pings_and_gets_the_final_message(claude, fake):
    raw, derived, final = run_stream(claude.messages.stream(model=FLASH, max_tokens=64,
                                                            messages=user("[[silence:1.2]]")))
    assert final.content[0].text == "Hello world" and final.stop_reason == "end_turn"
    assert usage_of(final.usage) == expected_usage("silence")


# ---- message threads (the SDK tool runners' default) ---------------------------------------------

def _tool_runner_run(client, fake, model=FLASH):
    """The SDK's default tool runner over two turns; returns the final message and what the SDK
    itself sent (thread and messages of each call)."""
    from anthropic import beta_tool

    sent = []
    create = client.beta.messages.create

    def recording(**kw):
        sent.append({"thread": kw.get("thread"), "messages": kw.get("messages"),
                     "tools": kw.get("tools") is not None})
        return create(**kw)
    client.beta.messages.create = recording

    @beta_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: The city name.
        """
        return f"Sunny, 21C in {city}"

    runner = client.beta.messages.tool_runner(
        model=model, max_tokens=1024, tools=[get_weather], system="Be brief.",
        messages=user('[[call:get_weather={"city": "Paris"}]] What is the weather in Paris?'))
    return runner.until_done(), sent


@pytest.mark.parametrize("route", ["gateway", "provider_gateway"])
def test_the_sdk_tool_runner_continues_its_thread(request, route, fake):
    """Turn two sends only the tool result (``thread: continue``); the gateway puts the stored
    conversation, system prompt and tools back in front, on whichever worker it lands."""
    from tests.fake_upstream import CALL_ANSWER_PREFIX, tool_results_after_last_call
    server = request.getfixturevalue(route)
    client = anthropic.Anthropic(base_url=server.url, api_key=LOCAL_KEY, max_retries=0, timeout=30)
    model = FLASH if route == "gateway" else "claude-sonnet-5"
    final, sent = _tool_runner_run(client, fake, model)
    assert final.content[0].text == CALL_ANSWER_PREFIX + "Sunny, 21C in Paris"
    assert [s["thread"]["type"] for s in sent] == ["create", "continue"]
    assert len(sent[1]["messages"]) == 1 and sent[1]["tools"] is False    # only the new turn
    calls = [r for r in fake.requests if r["method"] == "POST"]
    assert len(calls) == 2
    wire = "generate" if route == "gateway" else "messages"
    assert tool_results_after_last_call(calls[1]["body"], wire) == ["Sunny, 21C in Paris"]
    second = json.dumps(calls[1]["body"])
    assert "get_weather" in second and "Be brief." in second and "What is the weather" in second


def test_an_unknown_thread_is_thread_not_found_and_storage_off_is_unsupported(gateway, fake, tmp_path):
    r = post_raw(gateway, {"model": FLASH, "max_tokens": 64, "messages": user("hi"),
                           "thread": {"type": "continue", "previous_message_id": "msg_nope"}})
    assert r.status_code == 404
    assert r.json()["error"]["details"] == {"error_code": "thread_not_found"}
    r = post_raw(gateway, {"model": FLASH, "max_tokens": 64, "messages": user("hi"),
                           "thread": {"type": "fork"}})
    assert r.status_code == 400 and r.json()["error"]["details"]["error_code"] == "thread_unsupported_request"
    assert fake.requests == []
    from gateway import create_app
    c = create_app(gateway_config(fake.url, tmp_path, store_responses=False)).test_client()
    r = c.post("/v1/messages", headers={"x-api-key": LOCAL_KEY},
               json={"model": FLASH, "max_tokens": 64, "messages": user("hi"), "thread": {"type": "create"}})
    assert r.status_code == 400
    assert r.json["error"]["details"] == {"error_code": "thread_unsupported_request", "unsupported": ["thread"]}
    assert fake.requests == []


def test_the_tool_runner_carries_on_without_threads_when_they_are_off(fake, tmp_path_factory, fake_server):
    """Storage off: the first call is refused before anything goes upstream and the SDK
    re-sends it, and every later turn, with the whole history."""
    from tests.conftest import start_gateway
    from tests.fake_upstream import CALL_ANSWER_PREFIX
    server = start_gateway(fake_server, tmp_path_factory, "no-threads", store_responses=False)
    try:
        client = anthropic.Anthropic(base_url=server.url, api_key=LOCAL_KEY, max_retries=0, timeout=30)
        final, sent = _tool_runner_run(client, fake)
        assert final.content[0].text == CALL_ANSWER_PREFIX + "Sunny, 21C in Paris"
        assert [s["thread"] for s in sent][0] == {"type": "create"}
        assert len([r for r in fake.requests if r["method"] == "POST"]) == 2
    finally:
        server.stop()
