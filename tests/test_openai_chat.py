"""Chat Completions (``gateway/codecs/openai_chat.py``) on its own: plain calls, no HTTP.

``decode`` (messages and roles, tools and tool_choice, images, what is ignored), the streamed
``chat.completion.chunk`` lines and their closing usage chunk, finish reasons, the whole
``chat.completion`` object, and the OpenAI error envelope.  The route over HTTP, with the SDK,
is in test_openai_integration.py.
"""
from __future__ import annotations

import json

import pytest

from gateway import errors
from gateway.canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, Finish, Image, Message,
                               Reasoning, ReasoningDelta, SystemBlock, Text, TextDelta, Tool,
                               ToolCall, ToolCallEvent, ToolResult, Usage)
from gateway.catalog import Catalog
from gateway.codecs import openai_chat as codec
from tests.raw_http import sse_data

CATALOG = Catalog.load()
FLASH = "deepseek/deepseek-v4-flash"        # efforts: high, max
SONNET = "claude-sonnet-5"                  # efforts: low .. max
PNG = "data:image/png;base64,iVBORw0KGgo="


class Images:
    """Records what the codec asks for; every URL is an image."""

    def __init__(self):
        self.asked: list[tuple[str, str]] = []

    def load(self, url: str, param: str) -> Image:
        self.asked.append((url, param))
        return Image(url, "image/png")


def decode(messages=None, images=None, **fields):
    body = {"model": FLASH, "messages": messages or [{"role": "user", "content": "hi"}], **fields}
    return codec.decode(body, CATALOG, images or Images())


def refused(param: str, **kw) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as info:
        decode(**kw)
    assert info.value.param == param and info.value.status == 400
    return info.value


# ---- decode: messages --------------------------------------------------------------------------

def test_every_role_lands_where_the_canonical_model_keeps_it():
    req = decode([
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "reasoning_content": "look it up",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "assistant", "content": [{"type": "text", "text": "Rain."},
                                          {"type": "refusal", "refusal": "no more"}]},
    ])
    assert req.system == [SystemBlock("Be brief."), SystemBlock("Use tools.")]
    assert req.messages == [
        Message("user", [Text("weather?")]),
        Message("assistant", [Reasoning("look it up"), ToolCall("c1", "weather", {"city": "Oslo"})]),
        Message("tool", [ToolResult("c1", "rain")]),
        Message("assistant", [Text("Rain.\nno more")]),
    ]
    assert req.model.id == FLASH and req.requested_model == FLASH


def test_the_model_is_named_as_asked_and_resolved_to_the_catalog():
    req = codec.decode({"model": "DEEPSEEK-V4-FLASH", "messages": [{"role": "user", "content": "x"}]},
                       CATALOG, Images())
    assert req.model.id == FLASH and req.requested_model == "DEEPSEEK-V4-FLASH"


@pytest.mark.parametrize("messages,param", [
    ([], "messages"),
    (["hi"], "messages[0]"),
    ([{"role": "robot", "content": "x"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
    ([{"role": "user", "content": [{"type": "input_audio"}]}], "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0].type"),
    ([{"role": "assistant", "content": "x", "tool_calls": ["c"]}], "messages[0].tool_calls[0]"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],
     "messages[0].content[0].type"),
])
def test_malformed_messages_are_400s_naming_the_field(messages, param):
    with pytest.raises(errors.InvalidRequest) as info:
        codec.decode({"model": FLASH, "messages": messages}, CATALOG, Images())
    assert info.value.param == param


def test_n_above_one_is_refused_and_n_one_accepted():
    refused("n", n=2)
    assert decode(n=1).messages == [Message("user", [Text("hi")])]


def test_max_completion_tokens_wins_over_max_tokens_and_must_be_positive():
    assert decode(max_completion_tokens=50, max_tokens=10).max_tokens == 50
    assert decode(max_tokens=10).max_tokens == 10
    refused("max_tokens", max_tokens=0)


def test_temperature_stream_and_effort():
    req = decode(temperature=0.3, stream=True, reasoning_effort="low")
    assert (req.temperature, req.stream) == (0.3, True)
    assert req.reasoning_effort == "high"        # clamped to the nearest the model accepts
    assert decode(reasoning={"effort": "max"}).reasoning_effort == "max"
    assert decode(reasoning_effort="none").reasoning_effort is None
    assert decode().reasoning_effort is None and decode().stream is False
    refused("reasoning_effort", reasoning_effort="huge")
    refused("temperature", temperature=3)
    refused("stream", stream="yes")


def test_response_format_and_other_unsupported_fields_are_ignored():
    plain = decode()
    ignored = decode(response_format={"type": "json_schema", "json_schema": {"name": "x"}},
                     top_p=0.5, seed=1, stop=["x"], user="u", logprobs=False,
                     stream_options={"include_usage": True}, parallel_tool_calls=True)
    assert ignored.system == plain.system == [] and ignored.messages == plain.messages
    assert ignored.tools == [] and ignored.max_tokens is None


# ---- decode: tools and images ------------------------------------------------------------------

def test_function_tools_and_their_default_schema():
    req = decode(tools=[
        {"type": "function", "function": {"name": "a", "description": "A.",
                                          "parameters": {"type": "object", "properties": {
                                              "x": {"type": "string"}}}}},
        {"function": {"name": "b"}}])
    assert req.tools == [
        Tool("a", "A.", {"type": "object", "properties": {"x": {"type": "string"}}}),
        Tool("b", "", {"type": "object", "properties": {}})]


@pytest.mark.parametrize("tools,param", [
    ([{"type": "web_search"}], "tools[0]"),
    (["a"], "tools[0]"),
    ([{"type": "function"}], "tools[0].function"),
    ([{"type": "function", "function": {}}], "tools[0].function.name"),
])
def test_malformed_tools_are_400s(tools, param):
    refused(param, tools=tools)


@pytest.mark.parametrize("choice,canonical", [
    (None, "auto"), ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "function": {"name": "a"}}, "required"),
])
def test_tool_choice(choice, canonical):
    fields = {} if choice is None else {"tool_choice": choice}
    assert decode(**fields).tool_choice == canonical
    assert codec.tool_choice(fields) == canonical


def test_an_unknown_tool_choice_is_a_400():
    refused("tool_choice", tool_choice="always")


def test_tool_call_arguments_become_an_object_and_must_be_a_string():
    """A model's broken or non-object JSON becomes ``{}`` (the turn still goes); a number is
    not JSON text at all, so it is the client's mistake."""
    def call(arguments):
        return [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": arguments}}]}]
    for arguments, parsed in (('{"a":1}', {"a": 1}), ({"a": 1}, {"a": 1}), ("[1]", {}),
                              ("{broken", {}), ("", {})):
        assert decode(call(arguments)).messages[1].parts == [ToolCall("c", "f", parsed)]
    with pytest.raises(errors.InvalidRequest) as info:
        decode(call(5))
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_images_in_user_and_tool_messages_go_through_the_loader():
    images = Images()
    req = decode([
        {"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c", "function": {"name": "shot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c",
         "content": [{"type": "text", "text": "here"}, {"type": "image_url", "image_url": PNG}]},
    ], images=images)
    assert req.messages[0] == Message("user", [Text("what is it?"), Image(PNG, "image/png")])
    assert req.messages[2] == Message("tool", [ToolResult("c", "here",
                                                          images=[Image(PNG, "image/png")])])
    assert images.asked == [(PNG, "messages[0].content[1].image_url.url"),
                            (PNG, "messages[2].content[1].image_url.url")]


def test_an_image_without_a_url_is_a_400_before_anything_is_loaded():
    images = Images()
    with pytest.raises(errors.InvalidRequest) as info:
        decode([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
               images=images)
    assert info.value.param == "messages[0].content[0].image_url.url" and images.asked == []


# ---- stream ------------------------------------------------------------------------------------

USAGE = Usage(input_tokens=10, output_tokens=4, cache_read_tokens=3, cache_write_tokens=1,
              reasoning_tokens=2)


def test_stream_chunks_role_first_then_deltas_then_finish_usage_and_done():
    enc = codec.ChunkEncoder("my-model", completion_id="chatcmpl-1", created=123)
    raw = b"".join(enc.event(ev) for ev in (
        ReasoningDelta("think"), ReasoningDelta("", signature="sig"), TextDelta("Hel"),
        TextDelta("lo"), Finish(STOP, USAGE)))
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    for chunk in data[:-1]:
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "chatcmpl-1", "chat.completion.chunk", 123, "my-model")
    deltas = [c["choices"][0]["delta"] for c in data[:-2]]
    assert deltas == [{"role": "assistant", "reasoning_content": "think"}, {"content": "Hel"},
                      {"content": "lo"}, {}]         # a signature alone sends nothing
    assert [c["choices"][0]["finish_reason"] for c in data[:-2]] == [None, None, None, "stop"]
    assert data[-2]["choices"] == [] and data[-2]["usage"] == {
        "prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2}}


def test_tool_calls_are_indexed_and_turn_stop_into_tool_calls():
    enc = codec.ChunkEncoder("m")
    raw = (enc.event(ToolCallEvent("c1", "a", {"x": 1})) + enc.event(ToolCallEvent("c2", "b", {}))
           + enc.event(Finish(STOP, Usage())))
    data = sse_data(raw)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in data[:2]]
    assert calls == [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
        {"index": 1, "id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert data[2]["choices"][0]["finish_reason"] == TOOL_CALLS


@pytest.mark.parametrize("reason", [LENGTH, CONTENT_FILTER])
def test_other_finish_reasons_pass_through_even_after_a_tool_call(reason):
    enc = codec.ChunkEncoder("m")
    enc.event(ToolCallEvent("c", "a", {}))
    assert sse_data(enc.event(Finish(reason, Usage())))[0]["choices"][0]["finish_reason"] == reason


def test_an_empty_answer_still_announces_the_role_with_empty_content():
    data = sse_data(codec.ChunkEncoder("m").event(Finish(STOP, Usage())))
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert data[1]["choices"] == [] and data[2] == "[DONE]"


def test_heartbeat_is_an_sse_comment_and_errors_are_an_error_chunk_then_done():
    enc = codec.ChunkEncoder("m")
    assert enc.heartbeat() == b": keep-alive\n\n"
    raw = enc.error(errors.RateLimited("slow down", retry_after=5))
    assert sse_data(raw) == [{"error": {"message": "slow down", "type": "rate_limit_error",
                                      "code": "rate_limit_exceeded", "param": None}}, "[DONE]"]
    assert raw == codec.stream_error(errors.RateLimited("slow down"))


# ---- whole completion --------------------------------------------------------------------------

def test_completion_object_joins_text_and_reasoning():
    body = codec.completion([ReasoningDelta("hm"), ReasoningDelta(""), TextDelta("a"),
                             TextDelta("b"), Finish(LENGTH, USAGE)], "asked-model")
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "asked-model" and isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "ab",
                                                        "reasoning_content": "hm"},
                                "finish_reason": "length", "logprobs": None}]
    assert body["usage"]["total_tokens"] == 14


def test_completion_with_only_tool_calls_has_null_content_and_tool_calls_reason():
    body = codec.completion([ToolCallEvent("c", "f", {"q": "x"}), Finish(STOP, Usage())], "m")
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"q":"x"}'}}]}
    assert choice["finish_reason"] == "tool_calls"


def test_completion_without_finish_reads_stop_with_zero_usage():
    body = codec.completion([TextDelta("x")], "m")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 0 and body["usage"]["total_tokens"] == 0


# ---- error envelope ----------------------------------------------------------------------------

@pytest.mark.parametrize("err,etype,code", [
    (errors.InvalidRequest("bad", param="messages"), "invalid_request_error", None),
    (errors.AuthenticationFailed("who?"), "authentication_error", "invalid_api_key"),
    (errors.InsufficientCredits("broke"), "insufficient_quota", "insufficient_quota"),
    (errors.NotFound("gone", code="model_not_found"), "not_found_error", "model_not_found"),
    (errors.AtCapacity("busy"), "server_error", "gateway_at_capacity"),
    (errors.Overloaded("busy"), "server_error", "overloaded"),
    (errors.UpstreamTimeout("slow"), "server_error", "upstream_timeout"),
])
def test_error_body_is_the_openai_envelope(err, etype, code):
    assert codec.error_body(err) == {"error": {"message": err.message, "type": etype,
                                               "code": code, "param": err.param}}
    assert list(codec.error_body(err)["error"]) == ["message", "type", "code", "param"]
