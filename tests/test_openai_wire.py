"""The Provider API's OpenAI format (gateway/upstream/openai_wire.py) without a server: its
stream decoder, fed the same bytes in every split, and its request bodies."""
from __future__ import annotations

import json

import pytest

from gateway import errors
from gateway.canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, Finish, Image, Message,
                               Reasoning, ReasoningDelta, SystemBlock, Text, TextDelta, Tool,
                               ToolCall, ToolCallEvent, ToolResult, Usage)
from gateway.upstream import openai_wire
from tests.wire_fixtures import (FLASH, KIMI, KIMI_26, GLM_FLASH, PNG, JPG, SCHEMA, READ, req, hi,
                                 SPLITS, split, run, openai_sse)


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



# ---- fixes found by review -----------------------------------------------------------------------

def test_openai_usage_reads_deepseeks_cache_hit_field():
    u = openai_wire.parse_usage({"prompt_tokens": 100, "completion_tokens": 5,
                                 "prompt_cache_hit_tokens": 64})
    assert (u.input_tokens, u.cache_read_tokens) == (100, 64)
