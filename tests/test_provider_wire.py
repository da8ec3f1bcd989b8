"""The Provider API route without a server: SSE framing, both wire formats (request bodies and
stream decoders), in-band failures, the per-key route memory, plans and the catalog merge.

Every decoder test feeds the same bytes in several splits -- whole, one byte at a time (which
cuts lines and UTF-8 characters), line by line and at random -- and expects the exact same events.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from gateway import errors, plans
from gateway.canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish,
                               Image, Message, Reasoning, ReasoningDelta, SystemBlock, Text,
                               TextDelta, Tool, ToolCall, ToolCallEvent, ToolResult, Usage)
from gateway.catalog import Catalog, Model, prefixed
from gateway.key_routes import CLI, PROVIDER, RECHECK_SECONDS, KeyRoutes
from gateway.upstream import anthropic_wire, failures, openai_wire
from gateway.upstream.sse import SSEParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATALOG = Catalog.load()
FLASH = CATALOG.resolve("deepseek/deepseek-v4-flash")      # efforts high/max, no vision, no cap
KIMI = CATALOG.resolve("moonshotai/Kimi-K3")               # vision
KIMI_26 = CATALOG.resolve("moonshotai/Kimi-K2.6")          # no efforts
GLM_FLASH = CATALOG.resolve("z-ai/glm-5.3-flash")          # max output 131072
SONNET = CATALOG.resolve("claude-sonnet-5")                # efforts, no max output
HAIKU = CATALOG.resolve("claude-haiku-4-5")                # no efforts
PNG = "data:image/png;base64,iVBORw0KGgo="
JPG = "data:image/jpeg;base64,/9j/4AAQSkZJRg=="
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
READ = Tool("read_file", "Read a file", SCHEMA)


def req(messages, model=FLASH, **kw) -> ChatRequest:
    return ChatRequest(model=model, requested_model=model.id, messages=messages, **kw)


def hi(**kw) -> ChatRequest:
    return req([Message("user", [Text("hi")])], **kw)


# ---- feeding bytes in every split ----------------------------------------------------------------

def _random(seed: int, most: int):
    def split(data: bytes) -> list[bytes]:
        rnd, out, i = random.Random(seed), [], 0
        while i < len(data):
            n = rnd.randint(1, most)
            out.append(data[i:i + n])
            i += n
        return out
    return split


SPLITS = {
    "whole": lambda d: [d],
    "bytes": lambda d: [d[i:i + 1] for i in range(len(d))],
    "lines": lambda d: d.splitlines(keepends=True),
    "random-small": _random(1, 7),
    "random-mid": _random(2, 40),
    "random-large": _random(3, 300),
}


@pytest.fixture(params=list(SPLITS), ids=list(SPLITS))
def split(request):
    return SPLITS[request.param]


def run(decoder_cls, data: bytes, split) -> list:
    """What :func:`gateway.transport.iter_events` does: feed every chunk, ``end()`` unless done."""
    decoder = decoder_cls()
    events: list = []
    for chunk in split(data):
        events += decoder.feed(chunk)
    if not decoder.done:
        events += decoder.end()
    assert decoder.done
    return events


def openai_sse(*chunks, done: bool = True, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    text = "".join(f"data: {json.dumps(c, ensure_ascii=False)}{nl}{nl}" for c in chunks)
    return (text + (f"data: [DONE]{nl}{nl}" if done else "")).encode()


def anthropic_sse(*events) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n"
                   for e in events).encode()


# ---- SSEParser -------------------------------------------------------------------------------------

def parse(data: bytes, split) -> list:
    p = SSEParser()
    out: list = []
    for chunk in split(data):
        out += p.feed(chunk)
    return out + p.end()


def test_sse_events_fields_comments_and_crlf(split):
    data = (": keep-alive\n\n"
            "event: message_start\ndata: {\"a\": \"é世🎉\"}\n\n"
            "data: line one\ndata: line two\n\n"
            "id: 7\nretry: 100\ndata:no-space\n\n"
            "data:  two spaces\r\n\r\n"
            "event: lonely\n\n"
            "data: after lonely\n\n"
            "data\n\n").encode()
    assert parse(data, split) == [
        ("message_start", "{\"a\": \"é世🎉\"}".encode()),
        (None, b"line one\nline two"),
        (None, b"no-space"),
        (None, b" two spaces"),
        (None, b"after lonely"),        # an event name without data is dropped, then reset
        (None, b""),
    ]


def test_sse_last_event_without_its_blank_line_counts_at_end(split):
    assert parse(b"data: one\n\nevent: x\ndata: two\n", split) == [(None, b"one"), ("x", b"two")]
    assert parse(b"data: one\n\ndata: tw", split) == [(None, b"one"), (None, b"tw")]
    assert parse(b"", split) == []


def test_sse_feed_returns_events_as_soon_as_their_blank_line_arrives():
    p = SSEParser()
    assert p.feed(b"data: a") == []
    assert p.feed(b"bc\n") == []
    assert p.feed(b"\n") == [(None, b"abc")]
    assert p.feed(b"data: x\n\ndata: y\n\nda") == [(None, b"x"), (None, b"y")]
    assert p.feed(b"ta: z\r") == []
    assert p.feed(b"\n\r\n") == [(None, b"z")]
    assert p.end() == []


# ---- OpenAI format: decoder ------------------------------------------------------------------------

def chunk(delta=None, finish=None, usage=None, index=0, **extra) -> dict:
    c = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}]}
    if usage is not None:
        c["usage"] = usage
    c.update(extra)
    return c


OAI_USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
             "prompt_tokens_details": {"cached_tokens": 40},
             "completion_tokens_details": {"reasoning_tokens": 7}}
OAI_CANONICAL = Usage(input_tokens=100, output_tokens=20, cache_read_tokens=40, reasoning_tokens=7)


def test_openai_text_reasoning_and_usage_chunk_after_the_finish(split):
    data = openai_sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Think "}),
        chunk({"reasoning_content": "héllo ✓"}),
        chunk({"content": "Bonjour 世界 🎉"}),
        chunk({"content": "!"}),
        chunk({}, finish="stop"),
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": OAI_USAGE})
    assert run(openai_wire.Decoder, data, split) == [
        ReasoningDelta("Think "), ReasoningDelta("héllo ✓"), TextDelta("Bonjour 世界 🎉"),
        TextDelta("!"), Finish(STOP, OAI_CANONICAL)]


def test_openai_finish_waits_for_the_usage_chunk_then_ignores_the_rest():
    d = openai_wire.Decoder()
    assert d.feed(openai_sse(chunk({"content": "a"}), done=False)) == [TextDelta("a")]
    assert d.feed(openai_sse(chunk({}, finish="length"), done=False)) == []
    assert not d.done
    assert d.feed(openai_sse({"choices": [], "usage": OAI_USAGE}, done=False)) == [
        Finish(LENGTH, OAI_CANONICAL)]
    assert d.done and d.usage == OAI_CANONICAL
    assert d.feed(openai_sse(chunk({"content": "late"}))) == []
    assert d.end() == []


def test_openai_usage_in_the_finish_chunk_finishes_at_once(split):
    data = openai_sse(chunk({"content": "x"}), chunk({}, finish="stop", usage=OAI_USAGE),
                      chunk({"content": "ignored"}))
    assert run(openai_wire.Decoder, data, split) == [TextDelta("x"), Finish(STOP, OAI_CANONICAL)]
    d = openai_wire.Decoder()
    assert d.feed(openai_sse(chunk({}, finish="stop", usage=OAI_USAGE), done=False)) == [
        Finish(STOP, OAI_CANONICAL)]
    assert d.done


def test_openai_done_without_usage_finishes_with_zero_usage(split):
    data = openai_sse(chunk({"content": "x"}), chunk({}, finish="stop"))
    assert run(openai_wire.Decoder, data, split) == [TextDelta("x"), Finish(STOP, Usage())]
    d = openai_wire.Decoder()
    d.feed(openai_sse(chunk({}, finish="stop"), done=False))
    assert d.feed(b"data: [DONE]\n\n") == [Finish(STOP, Usage())]


def test_openai_missing_done_is_accepted_at_end_when_the_finish_was_seen(split):
    data = openai_sse(chunk({"content": "x"}), chunk({}, finish="content_filter"), done=False)
    assert run(openai_wire.Decoder, data, split) == [TextDelta("x"), Finish(CONTENT_FILTER, Usage())]
    d = openai_wire.Decoder()
    assert d.feed(data) == [TextDelta("x")] and not d.done
    assert d.end() == [Finish(CONTENT_FILTER, Usage())] and d.done


@pytest.mark.parametrize("data", [
    openai_sse(chunk({"content": "half an ans"}), {"choices": [], "usage": OAI_USAGE}),
    openai_sse(chunk({"content": "half an ans"}), done=False),
    openai_sse(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]})),
    b"",
    b": keep-alive\n\n",
], ids=["done-no-finish", "cut", "tool-call-cut", "empty", "comment-only"])
def test_openai_stream_without_finish_reason_raises_truncated(data, split):
    with pytest.raises(errors.UpstreamError) as exc:
        run(openai_wire.Decoder, data, split)
    assert exc.value.code == "upstream_truncated" and exc.value.status == 502


def test_openai_finish_reason_error_raises(split):
    data = openai_sse(chunk({"content": "part"}), chunk({}, finish="error"),
                      {"choices": [], "usage": OAI_USAGE})
    with pytest.raises(errors.UpstreamError) as exc:
        run(openai_wire.Decoder, data, split)
    assert exc.value.code == "upstream_finish_error" and exc.value.status == 502
    with pytest.raises(errors.UpstreamError) as exc:      # no usage, no [DONE]: at end()
        run(openai_wire.Decoder, openai_sse(chunk({}, finish="error"), done=False), split)
    assert exc.value.code == "upstream_finish_error"


@pytest.mark.parametrize("finish, reason", [
    ("stop", STOP), ("length", LENGTH), ("tool_calls", TOOL_CALLS), ("function_call", TOOL_CALLS),
    ("content_filter", CONTENT_FILTER), ("something_new", STOP)])
def test_openai_finish_reasons(finish, reason):
    data = openai_sse(chunk({}, finish=finish, usage=OAI_USAGE))
    assert run(openai_wire.Decoder, data, SPLITS["whole"]) == [Finish(reason, OAI_CANONICAL)]


@pytest.mark.parametrize("error, cls, status, code", [
    ({"type": "rate_limit_error", "message": "slow down"}, errors.RateLimited, 429,
     "rate_limit_exceeded"),
    ({"type": "overloaded_error", "message": "Overloaded"}, errors.Overloaded, 529, "overloaded"),
    ({"type": "invalid_request_error", "message": "Insufficient credits"},
     errors.InsufficientCredits, 402, "insufficient_quota"),
    ({"message": "upstream exploded", "type": "server_error", "code": None}, errors.UpstreamError,
     502, "upstream_error"),
    ({"message": "bad", "type": "invalid_request_error", "code": "unsupported_model"},
     errors.InvalidRequest, 400, "unsupported_model"),
    ("a plain string", errors.UpstreamError, 502, "upstream_error"),
])
def test_openai_top_level_error_member_raises_the_mapped_error(error, cls, status, code, split):
    data = openai_sse(chunk({"content": "partial"}), {"error": error})
    with pytest.raises(errors.GatewayError) as exc:
        run(openai_wire.Decoder, data, split)
    assert type(exc.value) is cls
    assert exc.value.status == status and exc.value.code == code
    if isinstance(error, dict):
        assert error["message"] in exc.value.message


def test_openai_error_after_the_text_already_relayed():
    d = openai_wire.Decoder()
    assert d.feed(openai_sse(chunk({"content": "hello"}), done=False)) == [TextDelta("hello")]
    with pytest.raises(errors.RateLimited):
        d.feed(openai_sse({"error": {"type": "rate_limit_error", "message": "slow"}}, done=False))


def test_openai_reasoning_and_reasoning_content_are_both_read_once(split):
    data = openai_sse(chunk({"reasoning": "via reasoning"}),
                      chunk({"reasoning_content": "via reasoning_content"}),
                      chunk({"reasoning_content": "both", "reasoning": "both"}),
                      chunk({"reasoning_content": "", "reasoning": None, "content": None}),
                      chunk({"content": "answer"}, finish="stop", usage=OAI_USAGE))
    assert run(openai_wire.Decoder, data, split) == [
        ReasoningDelta("via reasoning"), ReasoningDelta("via reasoning_content"),
        ReasoningDelta("both"), TextDelta("answer"), Finish(STOP, OAI_CANONICAL)]


def test_openai_reasoning_comes_before_the_text_of_the_same_delta(split):
    data = openai_sse(chunk({"reasoning_content": "last thought", "content": "First words"}),
                      chunk({"reasoning": "r", "content": "t"}, finish="stop", usage=OAI_USAGE))
    assert run(openai_wire.Decoder, data, split) == [
        ReasoningDelta("last thought"), TextDelta("First words"), ReasoningDelta("r"),
        TextDelta("t"), Finish(STOP, OAI_CANONICAL)]


def test_openai_parallel_tool_calls_assembled_by_index(split):
    def call(index, args=None, **kw):
        c = {"index": index, **kw}
        fn = {}
        if "name" in kw:
            fn["name"] = c.pop("name")
        if args is not None:
            fn["arguments"] = args
        if fn:
            c["function"] = fn
        return chunk({"tool_calls": [c]})

    data = openai_sse(
        chunk({"content": "Let me look."}),
        call(0, "", id="call_a", type="function", name="read_file"),
        call(1, '{"pat', id="call_b", type="function", name="grep"),
        call(0, '{"path": '),
        call(1, 'tern": "ü+"'),
        call(0, '"dir/é.txt"}'),
        call(1, ', "n": [1, 2]}', name="grep"),           # a repeated name is not appended
        chunk({}, finish="tool_calls"),
        {"choices": [], "usage": OAI_USAGE})
    assert run(openai_wire.Decoder, data, split) == [
        TextDelta("Let me look."),
        ToolCallEvent("call_a", "read_file", {"path": "dir/é.txt"}),
        ToolCallEvent("call_b", "grep", {"pattern": "ü+", "n": [1, 2]}),
        Finish(TOOL_CALLS, OAI_CANONICAL)]


def test_openai_tool_calls_come_out_whole_at_the_finish_in_index_order():
    d = openai_wire.Decoder()
    first = openai_sse(
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "b", "arguments": "{}"}},
                              {"index": 0, "id": "call_a", "function": {"name": "a", "arguments": "{\"x\":"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), done=False)
    assert d.feed(first) == []
    assert d.feed(openai_sse(chunk({}, finish="tool_calls"), done=False)) == [
        ToolCallEvent("call_a", "a", {"x": 1}), ToolCallEvent("call_b", "b", {})]
    assert d.feed(b"data: [DONE]\n\n") == [Finish(TOOL_CALLS, Usage())]


@pytest.mark.parametrize("arguments, parsed", [
    ('{"a": ', {}), ("not json", {}), ("[1, 2]", {}), ('"text"', {}), ("", {}), ("null", {}),
    ('{"ok": true}', {"ok": True})])
def test_openai_broken_or_odd_argument_json_becomes_an_empty_object(arguments, parsed, split):
    data = openai_sse(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                             "function": {"name": "f", "arguments": arguments}}]}),
                      chunk({}, finish="tool_calls", usage=OAI_USAGE))
    assert run(openai_wire.Decoder, data, split) == [ToolCallEvent("call_1", "f", parsed),
                                                     Finish(TOOL_CALLS, OAI_CANONICAL)]


def test_openai_tool_call_odd_shapes():
    data = openai_sse(
        chunk({"tool_calls": [{"function": {"name": "no_index_no_id", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_obj",
                               "function": {"name": "obj", "arguments": {"already": "parsed"}}}]}),
        chunk({"tool_calls": ["junk", None]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "renamed", "arguments": ""}}]}),
        chunk({}, finish="stop", usage=OAI_USAGE))
    events = run(openai_wire.Decoder, data, SPLITS["bytes"])
    generated, obj, finish = events
    assert generated.name == "no_index_no_id" and generated.input == {}
    assert generated.id.startswith("call_") and len(generated.id) == len("call_") + 16
    assert obj == ToolCallEvent("call_obj", "obj", {"already": "parsed"})
    assert finish == Finish(STOP, OAI_CANONICAL)


def test_openai_ignores_other_choices_comments_junk_and_crlf(split):
    data = (b": keep-alive\r\n\r\n" + b"data: not json\r\n\r\n" + b"data: [1, 2]\r\n\r\n"
            + openai_sse(chunk({"content": "other choice"}, index=1),
                         chunk({"content": "mine"}), {"choices": None},
                         {"error": None, "choices": [{"index": 0, "delta": {"content": "!"}}]},
                         chunk({}, finish="stop", index=1),
                         chunk({}, finish="stop"), {"choices": [], "usage": OAI_USAGE},
                         crlf=True))
    assert run(openai_wire.Decoder, data, split) == [TextDelta("mine"), TextDelta("!"),
                                                     Finish(STOP, OAI_CANONICAL)]


def test_openai_usage_parsing():
    assert openai_wire.parse_usage({}) == Usage()
    assert openai_wire.parse_usage({
        "prompt_tokens": 50, "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 20},
        "completion_tokens_details": None}) == Usage(50, 5, 10, 20, 0)
    assert openai_wire.parse_usage({
        "prompt_tokens": True, "completion_tokens": -3, "prompt_tokens_details": "junk",
        "completion_tokens_details": {"reasoning_tokens": 2.5}}) == Usage()
    assert openai_wire.parse_usage({
        "prompt_tokens": 9, "prompt_tokens_details": {"cache_creation_tokens": 4}}) == Usage(
        input_tokens=9, cache_write_tokens=4)


# ---- OpenAI format: encoder ------------------------------------------------------------------------

def test_openai_encode_minimal_body():
    assert openai_wire.encode(hi()) == {
        "model": "deepseek/deepseek-v4-flash",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True, "stream_options": {"include_usage": True}}


def test_openai_encode_system_options_and_tools():
    body = openai_wire.encode(hi(
        system=[SystemBlock("You are terse.", {"type": "ephemeral"}), SystemBlock("  \n"),
                SystemBlock("Answer in French.")],
        tools=[READ, Tool("grep", "", {"type": "object"})], max_tokens=1000, temperature=0.0,
        reasoning_effort="high"))
    assert body == {
        "model": "deepseek/deepseek-v4-flash",
        "messages": [{"role": "system", "content": "You are terse.\n\nAnswer in French."},
                     {"role": "user", "content": "hi"}],
        "stream": True, "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "read_file",
                                                    "description": "Read a file",
                                                    "parameters": SCHEMA}},
                  {"type": "function", "function": {"name": "grep", "description": "",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "max_tokens": 1000, "temperature": 0.0,
        "reasoning_effort": "high"}


def test_openai_encode_full_history_with_images_and_tool_results():
    body = openai_wire.encode(req([
        Message("user", [Text("Look at this"), Image(PNG, "image/png")]),
        Message("assistant", [Reasoning("I should read it", "sig"), Text("Reading."),
                              ToolCall("call_1", "read_file", {"path": "é.txt", "n": 1}),
                              ToolCall("call_2", "screenshot", {})]),
        Message("tool", [ToolResult("call_1", "no such file", is_error=True),
                         ToolResult("call_2", "the screen", images=[Image(JPG, "image/jpeg"),
                                                                    Image(PNG, "image/png")])]),
        Message("user", [Text("And now?")]),
        Message("assistant", [ToolCall("call_3", "screenshot", {"full": True})]),
        Message("tool", [ToolResult("call_3", "", images=[Image(PNG, "image/png")])]),
        Message("assistant", [Reasoning("only thinking")]),
        Message("user", [Image(JPG, "image/jpeg")]),
    ], model=KIMI, tools=[READ]))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Look at this"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "Reading.", "reasoning_content": "I should read it",
         "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "read_file", "arguments": '{"path":"é.txt","n":1}'}},
             {"id": "call_2", "type": "function",
              "function": {"name": "screenshot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: no such file"},
        {"role": "tool", "tool_call_id": "call_2",
         "content": "the screen\n[image 1 attached below]\n[image 2 attached below]"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": JPG}},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_3", "type": "function",
             "function": {"name": "screenshot", "arguments": '{"full":true}'}}]},
        {"role": "tool", "tool_call_id": "call_3", "content": "[image 1 attached below]"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": None, "reasoning_content": "only thinking"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": JPG}}]},
    ]
    for call in body["messages"][1]["tool_calls"]:          # arguments are JSON strings
        assert isinstance(call["function"]["arguments"], str)
        json.loads(call["function"]["arguments"])


def test_openai_encode_tool_result_edge_texts():
    body = openai_wire.encode(req([
        Message("user", [Text("go")]),
        Message("assistant", [ToolCall("a", "f", {}), ToolCall("b", "f", {}), ToolCall("c", "f", {})]),
        Message("tool", [ToolResult("a", ""), ToolResult("b", "", is_error=True),
                         ToolResult("c", "\nline\n")]),
    ]))
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "(empty)"},
        {"role": "tool", "tool_call_id": "b", "content": "Error: (empty)"},
        {"role": "tool", "tool_call_id": "c", "content": "line"}]


@pytest.mark.parametrize("model, asked, sent", [
    (GLM_FLASH, 200000, 131072), (GLM_FLASH, 1000, 1000), (GLM_FLASH, 131072, 131072),
    (FLASH, 500000, 500000), (GLM_FLASH, None, None), (FLASH, 0, None)])
def test_openai_encode_max_tokens_capped_by_the_models_max_output(model, asked, sent):
    body = openai_wire.encode(hi(model=model, max_tokens=asked))
    assert body.get("max_tokens") == sent


def test_openai_encode_reasoning_effort_only_for_models_with_efforts():
    assert openai_wire.encode(hi(model=FLASH, reasoning_effort="max"))["reasoning_effort"] == "max"
    assert "reasoning_effort" not in openai_wire.encode(hi(model=KIMI_26, reasoning_effort="high"))
    assert "reasoning_effort" not in openai_wire.encode(hi(model=FLASH))


@pytest.mark.parametrize("choice, tools, sent", [
    ("auto", True, "auto"), ("required", True, "required"), ("none", True, None),
    ("auto", False, None), ("required", False, None)])
def test_openai_encode_tool_choice(choice, tools, sent):
    body = openai_wire.encode(hi(tools=[READ] if tools else [], tool_choice=choice))
    assert body.get("tool_choice") == sent
    assert ("tools" in body) == (sent is not None)


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


# ---- failures --------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_, cls, status, code", [
    ("rate_limit_error", errors.RateLimited, 429, "rate_limit_exceeded"),
    ("overloaded_error", errors.Overloaded, 529, "overloaded"),
    ("authentication_error", errors.AuthenticationFailed, 401, "upstream_authentication_failed"),
    ("permission_error", errors.PermissionDenied, 403, "forbidden"),
    ("not_found_error", errors.UpstreamError, 502, "upstream_not_found"),
    ("request_too_large", errors.RequestTooLarge, 413, "request_too_large"),
    ("invalid_request_error", errors.InvalidRequest, 400, "invalid_request_error"),
    ("insufficient_quota", errors.InsufficientCredits, 402, "insufficient_quota"),
    ("billing_error", errors.InsufficientCredits, 402, "insufficient_quota"),
    ("api_error", errors.UpstreamError, 502, "upstream_error"),
    ("server_error", errors.UpstreamError, 502, "upstream_error"),
    (None, errors.UpstreamError, 502, "upstream_error"),
    ("RATE_LIMIT_ERROR", errors.RateLimited, 429, "rate_limit_exceeded"),
])
def test_from_inband_infers_the_status_from_the_type(type_, cls, status, code):
    err = failures.from_inband({"type": type_, "message": "something happened"})
    assert type(err) is cls and err.status == status and err.code == code
    assert "something happened" in err.message


def test_from_inband_an_explicit_status_wins_over_the_type():
    err = failures.from_inband({"statusCode": 429, "type": "invalid_request_error", "message": "m"})
    assert isinstance(err, errors.RateLimited)
    err = failures.from_inband({"status": 401, "type": "rate_limit_error", "message": "m"})
    assert isinstance(err, errors.AuthenticationFailed)
    err = failures.from_inband({"status": "429", "type": "overloaded_error", "message": "m"})
    assert isinstance(err, errors.Overloaded)       # a non-integer status is ignored


@pytest.mark.parametrize("error, cls, status, code", [
    ({"code": 429, "message": "Rate limited upstream"}, errors.RateLimited, 429,
     "rate_limit_exceeded"),
    ({"code": 502, "message": "Provider returned error"}, errors.UpstreamError, 502,
     "upstream_error"),
    ({"code": 400, "message": "bad", "type": "invalid_request_error"}, errors.InvalidRequest, 400,
     "invalid_request_error"),
    ({"code": 7, "type": "overloaded_error", "message": "m"}, errors.Overloaded, 529, "overloaded"),
    ({"code": 404, "status": 429, "message": "m"}, errors.RateLimited, 429, "rate_limit_exceeded"),
    ({"code": {"odd": 1}, "type": ["odd"], "message": "m"}, errors.UpstreamError, 502,
     "upstream_error"),
])
def test_from_inband_a_numeric_code_is_a_status_not_a_crash(error, cls, status, code):
    err = failures.from_inband(error)       # OpenRouter-style envelopes number their codes
    assert type(err) is cls and err.status == status and err.code == code


def test_from_http_a_numeric_code_is_ignored_not_a_crash():
    err = failures.from_http(400, b'{"error":{"code":400,"message":"bad field"}}')
    assert type(err) is errors.InvalidRequest and err.code is None
    assert err.message == "Command Code: bad field"


def test_from_inband_strings_and_messages():
    err = failures.from_inband("model call failed")
    assert type(err) is errors.UpstreamError and err.message == "Command Code: model call failed"
    assert failures.from_inband(None).message == "Command Code: upstream error"
    err = failures.from_inband({"type": "invalid_request_error", "message": "Insufficient credits"})
    assert isinstance(err, errors.InsufficientCredits) and err.status == 402
    err = failures.from_inband({"type": "invalid_request_error", "message": "x" * 2000})
    assert len(err.message) < 600


@pytest.mark.parametrize("message, cls, status, code, text", [
    ('{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}',
     errors.InvalidRequest, 400, "invalid_request_error", "Command Code: prompt is too long"),
    ('{"error":{"message":"Insufficient credits","type":"invalid_request_error"}}',
     errors.InsufficientCredits, 402, "insufficient_quota", "Command Code: Insufficient credits"),
    ('  {"error":{"type":"upgrade_required","message":"Upgrade to Pro"}}',
     errors.PermissionDenied, 403, "upgrade_required", "Command Code: Upgrade to Pro"),
    ('{"error":{"message":"Overloaded"}}', errors.Overloaded, 529, "overloaded",
     "Command Code: Overloaded"),
    ('{"not": "an error"}', errors.InvalidRequest, 400, None, 'Command Code: {"not": "an error"}'),
    ('{broken json', errors.InvalidRequest, 400, None, "Command Code: {broken json"),
    ('{"error":"just a string"}', errors.InvalidRequest, 400, None,
     'Command Code: {"error":"just a string"}'),
])
def test_classify_unwraps_a_double_encoded_json_error(message, cls, status, code, text):
    err = failures.classify(400 if cls is not errors.PermissionDenied else 403, message)
    assert type(err) is cls and err.status == status and err.code == code
    assert err.message.startswith(text)


@pytest.mark.parametrize("kw", [
    {"code": "upgrade_required"}, {"code": "UPGRADE_REQUIRED"}, {"type_": "upgrade_required"},
    {"message": "Your plan needs an upgrade (upgrade_required)"},
    {"message": "403 {\"error\":{\"type\":\"upgrade_required\",\"message\":\"no API\"}}"},
])
def test_classify_detects_upgrade_required_in_code_type_or_text(kw):
    message = kw.pop("message", "Your plan has no API access")
    err = failures.classify(403, message, **kw)
    assert type(err) is errors.PermissionDenied and err.code == "upgrade_required"
    assert "cli_version" in err.message


def test_classify_an_embedded_status_and_json_still_work_with_double_encoding():
    err = failures.classify(500, '429 {"error":{"type":"rate_limit_error","message":"slow down"}}')
    assert isinstance(err, errors.RateLimited)
    assert err.message == "Command Code: rate_limit_error: slow down"
    inner = json.dumps({"error": {"type": "api_error",
                                  "message": '529 {"error":{"type":"overloaded_error","message":"busy"}}'}})
    err = failures.classify(500, inner)
    assert isinstance(err, errors.Overloaded) and err.status == 529
    assert err.message == "Command Code: overloaded_error: busy"


def test_upgrade_required_from_both_provider_error_envelopes():
    openai_shape = {"error": {"message": "Upgrade to use the API", "type": "permission_error",
                              "code": "upgrade_required", "param": None}}
    err = failures.from_http(403, json.dumps(openai_shape).encode())
    assert err.code == "upgrade_required" and err.status == 403
    anthropic_shape = {"type": "error", "error": {"type": "permission_error", "message": json.dumps(
        {"type": "error", "error": {"type": "upgrade_required", "message": "Go plan"}})}}
    err = failures.from_http(403, json.dumps(anthropic_shape).encode())
    assert err.code == "upgrade_required" and "Go plan" in err.message
    err = failures.from_inband({"type": "upgrade_required", "message": "Upgrade"})
    assert type(err) is errors.PermissionDenied and err.code == "upgrade_required"
    # a plain 403 is not mistaken for it
    assert failures.from_http(403, b'{"error":{"type":"permission_error","message":"no"}}').code \
        == "forbidden"


def test_from_http_provider_anthropic_envelope_statuses():
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    err = failures.from_http(429, json.dumps(body).encode())
    assert isinstance(err, errors.RateLimited) and "slow down" in err.message
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert isinstance(failures.from_http(529, json.dumps(body).encode()), errors.Overloaded)


# ---- key routes ------------------------------------------------------------------------------------

@pytest.fixture
def routes_path(tmp_path):
    return str(tmp_path / "key-routes.json")


def write_routes(path: str, data) -> None:
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def test_key_routes_unknown_without_a_file(routes_path):
    r = KeyRoutes(routes_path)
    assert r.get("k1") is None and r.get("k1", fresh=True) is None
    assert not os.path.exists(routes_path)


def test_key_routes_remember_is_seen_by_another_process(routes_path, tmp_path):
    a, b = KeyRoutes(routes_path), KeyRoutes(routes_path)
    assert b.get("k1") is None
    before = time.time()
    with a.probing():
        a.remember("k1", CLI)
    assert a.get("k1") == CLI
    assert b.get("k1") == CLI                     # an unknown label re-reads a changed file
    with open(routes_path) as f:
        data = json.load(f)
    assert list(data) == ["k1"] and data["k1"][0] == "cli"
    assert isinstance(data["k1"][1], int) and before - 1 <= data["k1"][1] <= time.time()
    assert sorted(os.listdir(tmp_path)) == ["key-routes.json", "key-routes.json.lock"]
    with a.probing():
        a.remember("k2", PROVIDER)
    assert b.get("k2") == PROVIDER            # b had read the file before: re-read on change
    assert b.get("k3") is None


def test_key_routes_remember_keeps_the_other_processes_records(routes_path):
    a, b, c = KeyRoutes(routes_path), KeyRoutes(routes_path), KeyRoutes(routes_path)
    with a.probing():
        a.remember("k1", CLI)
    with b.probing():
        b.remember("k2", PROVIDER)            # b never read the file: it must not drop k1
    with a.probing():
        a.remember("k3", PROVIDER)            # a's view is stale: it must not drop k2
    assert {k: c.get(k) for k in ("k1", "k2", "k3")} == {"k1": CLI, "k2": PROVIDER, "k3": PROVIDER}
    with open(routes_path) as f:
        assert set(json.load(f)) == {"k1", "k2", "k3"}


def test_key_routes_known_labels_are_cached_until_asked_fresh(routes_path):
    a, b = KeyRoutes(routes_path), KeyRoutes(routes_path)
    with a.probing():
        a.remember("k1", PROVIDER)
    assert b.get("k1") == PROVIDER
    with a.probing():
        a.remember("k1", CLI)                 # the plan changed, seen by a
    assert b.get("k1") == PROVIDER            # a dict lookup: no file read on the hot path
    assert b.get("k1", fresh=True) == CLI
    assert b.get("k1") == CLI


def test_key_routes_cli_only_record_expires_after_the_recheck_time(routes_path):
    now = time.time()
    write_routes(routes_path, {"old-cli": ["cli", int(now - RECHECK_SECONDS - 60)],
                               "recent-cli": ["cli", int(now - RECHECK_SECONDS + 60)],
                               "old-provider": ["provider", int(now - 10 * RECHECK_SECONDS)]})
    r = KeyRoutes(routes_path)
    assert r.get("old-cli") is None
    assert r.get("old-cli", fresh=True) is None
    assert r.get("recent-cli") == CLI
    assert r.get("old-provider") == PROVIDER          # only CLI-only records are rechecked
    with r.probing():
        r.remember("old-cli", CLI)                    # rechecked: still Go, a new day starts
    assert r.get("old-cli") == CLI
    assert KeyRoutes(routes_path).get("old-cli") == CLI


def test_key_routes_expiry_uses_the_clock(routes_path, monkeypatch):
    r = KeyRoutes(routes_path)
    with r.probing():
        r.remember("k", CLI)
    real = time.time()
    monkeypatch.setattr("gateway.key_routes.time.time", lambda: real + RECHECK_SECONDS - 5)
    assert r.get("k") == CLI
    monkeypatch.setattr("gateway.key_routes.time.time", lambda: real + RECHECK_SECONDS + 5)
    assert r.get("k") is None


def test_key_routes_unreadable_or_odd_files(routes_path):
    write_routes(routes_path, "{not json")
    r = KeyRoutes(routes_path)
    assert r.get("k") is None
    with r.probing():
        r.remember("k", PROVIDER)             # the broken file is rewritten
    assert KeyRoutes(routes_path).get("k") == PROVIDER
    write_routes(routes_path, {"a": ["cli"], "b": ["other", 1], "c": ["provider", "x"],
                               "d": ["provider", 5], "e": "cli", "f": ["cli", 1, 2],
                               "g": ["cli", time.time()]})
    r = KeyRoutes(routes_path)
    assert {k: r.get(k) for k in "abcdefg"} == {"a": None, "b": None, "c": None, "d": PROVIDER,
                                                 "e": None, "f": None, "g": CLI}
    write_routes(routes_path, "[1, 2]")
    assert KeyRoutes(routes_path).get("d") is None


def test_key_routes_probing_excludes_threads_and_other_instances(routes_path):
    a, b = KeyRoutes(routes_path), KeyRoutes(routes_path)
    order: list[str] = []

    def contender(routes, name):
        with routes.probing():
            order.append(name)

    with a.probing():
        threads = [threading.Thread(target=contender, args=(a, "same-instance")),
                   threading.Thread(target=contender, args=(b, "other-instance"))]
        for t in threads:
            t.start()
        time.sleep(0.2)
        assert order == []                    # both wait while the lock is held
        order.append("holder")
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert order[0] == "holder" and sorted(order[1:]) == ["other-instance", "same-instance"]


_TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a") as f:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(3)
sys.exit(0)
"""


def test_key_routes_probing_lock_excludes_another_process(routes_path):
    r = KeyRoutes(routes_path)
    lock = routes_path + ".lock"
    with r.probing():
        held = subprocess.run([sys.executable, "-c", _TRY_LOCK, lock], timeout=30)
        assert held.returncode == 3
    free = subprocess.run([sys.executable, "-c", _TRY_LOCK, lock], timeout=30)
    assert free.returncode == 0


_PROBE_IN_CHILD = """
import sys
from gateway.key_routes import KeyRoutes
r = KeyRoutes(sys.argv[1])
print("waiting", flush=True)
with r.probing():
    print("got " + str(r.get("k1", fresh=True)), flush=True)
    r.remember("k2", "cli")
"""


def test_key_routes_another_process_waits_then_reads_the_outcome(routes_path):
    r = KeyRoutes(routes_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with r.probing():
        child = subprocess.Popen([sys.executable, "-c", _PROBE_IN_CHILD, routes_path], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "waiting"
            time.sleep(0.3)
            assert child.poll() is None           # blocked on the lock we hold
            r.remember("k1", PROVIDER)
        except BaseException:
            child.kill()
            raise
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.strip() == "got provider"
    assert r.get("k2") == CLI and r.get("k1") == PROVIDER


# ---- plans -----------------------------------------------------------------------------------------

def credits(**c) -> dict:
    return {"credits": c}


@pytest.mark.parametrize("body, tier", [
    (credits(planId="individual-go"), "go"),
    (credits(planId="individual-goat"), "goat"),
    (credits(planId="individual-pro"), "pro"),
    (credits(planId="individual-pro-v1"), "pro"),
    (credits(planId="individual-max"), "max"),
    (credits(planId="individual-ultra"), "max"),
    (credits(planId="individual-provider"), "max"),
    (credits(planId="teams-pro"), "max"),
    (credits(planId="individual-go", purchasedCredits=5), "max"),
    (credits(planId="individual-go", freeCredits=0.5), "max"),
    (credits(planId="individual-goat", purchasedCredits=0, freeCredits=0), "goat"),
    (credits(planId="individual-go", purchasedCredits=True), "go"),
    (credits(planId="individual-go", purchasedCredits="10"), "go"),
    (credits(planId="individual-go", purchasedCredits=-3), "go"),
    (credits(planId=None, purchasedCredits=1), "max"),
    (credits(planId="enterprise-2099"), None),
    (credits(planId=None), None),
    (credits(), None),
    ({"credits": None}, None),
    ({}, None),
    (None, None),
    ([], None),
])
def test_plan_tier(body, tier):
    assert plans.tier(body) == tier


@pytest.mark.parametrize("min_plan, account, ok", [
    ("go", None, True), ("max", None, True), (None, "go", True), ("enterprise", "go", True),
    ("go", "go", True), ("goat", "go", False), ("pro", "goat", False), ("goat", "pro", True),
    ("max", "pro", False), ("max", "max", True), ("pro", "max", True)])
def test_plan_usable(min_plan, account, ok):
    assert plans.usable(min_plan, account) is ok


def test_plan_quota_formats_windows_with_iso_reset_times():
    body = {"credits": {"planId": "individual-pro", "monthlyCredits": 12.5,
                        "purchasedCredits": 0, "freeCredits": 1, "other": "ignored"},
            "windowLimits": {
                "fiveHour": {"used": 3, "cap": 10, "exceeded": False, "resetAt": 1767225600000},
                "weekly": {"used": 10.5, "cap": 10, "exceeded": True, "resetAt": 1773500966}}}
    assert plans.quota(body) == {
        "plan": "individual-pro",
        "credits": {"monthly": 12.5, "purchased": 0, "free": 1},
        "windows": {
            "five_hour": {"used": 3, "cap": 10, "exceeded": False,
                          "resets_at": "2026-01-01T00:00:00Z"},
            "weekly": {"used": 10.5, "cap": 10, "exceeded": True,
                       "resets_at": "2026-03-14T15:09:26Z"}}}


def test_plan_quota_odd_bodies():
    empty = {"plan": None, "credits": {"monthly": 0, "purchased": 0, "free": 0},
             "windows": {"five_hour": None, "weekly": None}}
    assert plans.quota({}) == empty
    assert plans.quota(None) == empty
    assert plans.quota({"credits": "x", "windowLimits": []}) == empty
    body = {"credits": {"monthlyCredits": True, "freeCredits": "3"},
            "windowLimits": {"fiveHour": {"resetAt": 0}, "weekly": {"resetAt": True, "used": None}}}
    assert plans.quota(body) == {
        "plan": None, "credits": {"monthly": 0, "purchased": 0, "free": 0},
        "windows": {"five_hour": {"used": 0, "cap": 0, "exceeded": False, "resets_at": None},
                    "weekly": {"used": 0, "cap": 0, "exceeded": False, "resets_at": None}}}
    for bad in (None, -5, "1767225600000", [1]):
        assert plans.quota({"windowLimits": {"weekly": {"resetAt": bad}}})[
            "windows"]["weekly"]["resets_at"] is None


# ---- catalog: the Provider API's model list --------------------------------------------------------

UPSTREAM_MODELS = [
    {"id": "deepseek/deepseek-v4-flash", "name": "DeepSeek V4 Flash", "context_length": 2000000,
     "max_output_tokens": 384000, "supported_endpoints": ["/v1/chat/completions"]},
    {"id": "claude-sonnet-5", "name": "Claude Sonnet 5", "context_length": 1000000,
     "supported_endpoints": ["/v1/messages"]},
    {"id": "z-ai/glm-5.3-flash", "context_length": 0, "max_output_tokens": None},
    {"id": "newlab/model-x", "name": "X", "context_length": 128000, "max_output_tokens": 8192},
    {"id": "newlab/model-y"},
    {"id": "newlab/odd-numbers", "context_length": True, "max_output_tokens": -5},
    {"id": "newlab/float", "context_length": 1000.5, "max_output_tokens": "8192"},
    {"id": ""}, {"id": 5}, {"name": "no id"}, "junk", None,
]


def test_with_upstream_updates_known_models_and_adds_unknown_ones():
    base = Catalog.load()
    merged = base.with_upstream(UPSTREAM_MODELS)
    flash = merged.resolve("deepseek/deepseek-v4-flash")
    assert flash == Model("deepseek/deepseek-v4-flash", False, ("high", "max"), 2000000, 384000, "go")
    assert merged.resolve("claude-sonnet-5") == SONNET                  # nothing new to take
    assert merged.resolve("z-ai/glm-5.3-flash") == GLM_FLASH            # invalid numbers ignored
    assert merged.resolve("newlab/model-x") == Model("newlab/model-x", None, (), 128000, 8192, None)
    assert merged.resolve("newlab/model-y") == Model("newlab/model-y", None, (), 200000, None, None)
    assert merged.resolve("newlab/odd-numbers") == Model("newlab/odd-numbers", None, (), 200000,
                                                         None, None)
    assert merged.resolve("newlab/float").context == 200000
    assert merged.resolve("newlab/float").max_output is None
    ids = [m.id for m in merged.models]
    assert len(ids) == len(set(ids)) == len(base.models) + 4
    assert "" not in ids and 5 not in ids
    # the original catalog is untouched
    assert base.resolve("deepseek/deepseek-v4-flash") == FLASH and base.resolve("newlab/model-x") is None


def test_with_upstream_new_models_resolve_like_the_others_and_list_their_unknowns():
    merged = Catalog.load().with_upstream(UPSTREAM_MODELS)
    assert merged.resolve("model-x").id == "newlab/model-x"             # short name
    assert merged.resolve("NEWLAB/MODEL-X").id == "newlab/model-x"      # any case
    assert merged.resolve("model-x-20260101").id == "newlab/model-x"    # date suffix
    assert merged.resolve("claude-haiku-4-5").id == "claude-haiku-4-5-20251001"   # aliases kept
    assert merged.resolve("newlab/model-x").as_openai() == {
        "id": "newlab/model-x", "object": "model", "created": 0, "owned_by": "newlab",
        "context_length": 128000, "max_output_tokens": 8192, "vision": None,
        "reasoning_efforts": [], "min_plan": None}


def test_with_upstream_keeps_exclude_models_and_model_map():
    base = Catalog.load(exclude=["deepseek-v4", "Model-X"], model_map={"claude-*": "newlab/model-y"})
    merged = base.with_upstream(UPSTREAM_MODELS)
    ids = {m.id for m in merged.models}
    assert "newlab/model-x" not in ids and merged.resolve("newlab/model-x") is None
    assert "deepseek/deepseek-v4-flash" not in ids
    assert merged.resolve("deepseek/deepseek-v4-flash") is None
    assert merged.resolve("deepseek-v4-pro") is None
    assert "newlab/model-y" in ids
    assert merged.resolve("claude-anything").id == "newlab/model-y"
    assert merged.resolve("gpt-5.5").id == "gpt-5.5"
    assert merged.with_upstream([]).resolve("newlab/model-x") is None  # and again


def test_with_upstream_on_an_empty_list_is_the_same_catalog():
    merged = CATALOG.with_upstream([])
    assert merged.models == CATALOG.models
    assert merged.resolve("claude-haiku-4-5") == HAIKU


@pytest.mark.parametrize("model_id, prefixes, result", [
    ("deepseek/deepseek-v4-flash", ("deepseek",), True),
    ("deepseek/deepseek-v4-flash", ("deepseek-v4-pro",), False),
    ("deepseek/deepseek-v4-flash", ("deepseek/",), False),       # only the part after the last /
    ("MiniMaxAI/MiniMax-M3", ("minimax",), True),                 # any case of the id
    ("gpt-5.5", ("gpt-5",), True),
    ("claude-opus-5", ("opus",), False),
    ("claude-opus-5", ("glm", "claude-o"), True),
    ("a/b/c-model", ("c-",), True),
    ("deepseek/deepseek-v4-flash", (), False),
])
def test_prefixed(model_id, prefixes, result):
    assert prefixed(model_id, prefixes) is result


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


def test_with_upstream_keeps_the_catalog_spelling_of_a_known_id():
    merged = CATALOG.with_upstream([{"id": "TENCENT/HY3", "context_length": 123456}])
    assert [m.id for m in merged.models if m.id.lower() == "tencent/hy3"] == ["tencent/Hy3"]
    assert merged.resolve("hy3").context == 123456


def test_an_inner_error_type_decides_the_status_of_a_generic_outer_error():
    inner = json.dumps({"error": {"type": "rate_limit_error", "message": "slow down"}})
    err = failures.from_inband({"type": "api_error", "message": inner})
    assert isinstance(err, errors.RateLimited) and "slow down" in err.message


def test_openai_usage_reads_deepseeks_cache_hit_field():
    u = openai_wire.parse_usage({"prompt_tokens": 100, "completion_tokens": 5,
                                 "prompt_cache_hit_tokens": 64})
    assert (u.input_tokens, u.cache_read_tokens) == (100, 64)


def test_anthropic_decoder_ignores_events_whose_members_are_not_objects():
    d = anthropic_wire.Decoder()
    data = anthropic_sse({"type": "message_start", "message": "x"},
                         {"type": "content_block_start", "index": 0, "content_block": None},
                         {"type": "content_block_delta", "index": 0, "delta": [1]},
                         {"type": "message_delta", "delta": "y", "usage": {"output_tokens": 3}},
                         STOP_EV)
    events = d.feed(data) + d.end()
    assert events == [Finish(STOP, Usage(output_tokens=3))]
