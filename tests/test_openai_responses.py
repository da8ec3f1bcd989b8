"""The Responses surface: ``gateway/codecs/openai_responses.py`` and ``gateway/views/responses.py``.

The codec is checked on its own (decode: every input item and tool kind; the encoder: the exact
event sequence, each event validated against the openai SDK's own pydantic types), then end to
end with the official ``openai`` SDK against gunicorn and the fake upstream on the CLI route and
the Provider API: text, reasoning carried through a tool loop, function / custom / namespaced
tools, images, errors before and after output, truncation, silences, and stored responses
continued from another gunicorn than the one that stored them.
"""
from __future__ import annotations

import json
import typing

import openai
import pytest
import requests
import yaml
from openai.types.responses import Response, ResponseStreamEvent

from gateway import errors
from gateway.canonical import (Finish, Message, Reasoning, ReasoningDelta, SystemBlock, Text,
                               TextDelta, ToolCall, ToolCallEvent, ToolResult, Usage)
from gateway.catalog import Catalog
from gateway.codecs import openai_responses as codec
from gateway.images import RemoteImages
from tests.conftest import LOCAL_KEY, Gunicorn, free_port, gateway_config
from tests.fake_upstream import CALL_ANSWER_PREFIX, USAGE, tool_results_after_last_call

FLASH = "deepseek/deepseek-v4-flash"
VISION = "moonshotai/Kimi-K3"
CLAUDE = "claude-sonnet-5"
CODEX = "gpt-5.3-codex"
GENERATE, CHAT, MESSAGES = "/alpha/generate", "/provider/v1/chat/completions", "/provider/v1/messages"
#: event type -> the SDK's pydantic model for it (the union has no discriminator: one model
#: per type gives errors that name the field that is wrong)
EVENT_TYPES = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls
               for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])}
CATALOG = Catalog.load()
IMAGES = RemoteImages(False, 1 << 20, 5)
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
FS = {"type": "namespace", "name": "mcp__fs", "description": "files",
      "tools": [{"type": "function", "name": "read", "description": "Read a file",
                 "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]}


def decode(body: dict, previous=None):
    return codec.decode({"model": FLASH, **body}, CATALOG, IMAGES, previous)


def invalid(body: dict) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as info:
        decode(body)
    return info.value


# ---- decode ------------------------------------------------------------------------------------

def test_string_input_instructions_and_untyped_items():
    req, turn = decode({"input": "hi", "instructions": "Be brief."})
    assert req.messages == [Message("user", [Text("hi")])]
    assert req.system == [SystemBlock("Be brief.")]
    assert turn.id.startswith("resp_") and turn.store is True and turn.model == FLASH
    req, _ = decode({"input": [{"role": "developer", "content": "rules"},
                               {"role": "system", "content": [{"type": "input_text", "text": "more"}]},
                               {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                               {"role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
                               {"type": "message", "role": "user", "content": "q2"}]})
    assert [b.text for b in req.system] == ["rules", "more"]
    assert [(m.role, [p.text for p in m.parts]) for m in req.messages] == [
        ("user", ["q"]), ("assistant", ["a"]), ("user", ["q2"])]


def test_tool_kinds_flattened_dropped_and_hoisted():
    req, turn = decode({"input": [
        {"type": "additional_tools", "role": "developer", "tools": [
            {"type": "namespace", "name": "mcp__web", "tools": [{"type": "function", "name": "open"}]}]},
        {"role": "user", "content": "q"}],
        "tools": [WEATHER, PATCH, FS, {"type": "web_search"}, {"type": "image_generation"},
                  {"type": "local_shell"}, {"type": "tool_search"}]})
    assert [t.name for t in req.tools] == ["get_weather", "apply_patch", "mcp__fs__read", "mcp__web__open"]
    assert req.tools[1].input_schema == codec.CUSTOM_SCHEMA and "start: /.+/" in req.tools[1].description
    assert req.tools[3].input_schema == {"type": "object", "properties": {}}
    assert turn.tools["mcp__fs__read"] == codec.ClientTool("function", "read", "mcp__fs")
    assert turn.tools["apply_patch"].kind == "custom"
    assert [m.role for m in req.messages] == ["user"]          # additional_tools is no message
    codex_req, codex_turn = codec.decode({"model": CODEX, "input": "q", "tools": [{"type": "local_shell"}]},
                                         CATALOG, IMAGES)
    assert [t.name for t in codex_req.tools] == ["local_shell"] and codex_turn.tools["local_shell"].kind == "local_shell"


def test_history_items_become_one_turn_each_with_results_paired():
    ours = codec.encode_reasoning("thinking it over", "sig-1")
    req, _ = decode({"tools": [WEATHER, PATCH, FS], "input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "x"}],
         "encrypted_content": ours},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "read", "namespace": "mcp__fs", "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "c3", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [
            {"type": "input_text", "text": "file text"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]},
        {"type": "custom_tool_call_output", "call_id": "c3", "output": "Done!"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "compaction", "encrypted_content": "x"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "someone else's"}],
         "encrypted_content": "gAAAA-opaque"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}]})
    assert [m.role for m in req.messages] == ["user", "assistant", "tool", "assistant"]
    assistant = req.messages[1].parts
    assert assistant[0] == Reasoning("thinking it over", "sig-1")
    assert assistant[1:] == [ToolCall("c1", "get_weather", {"city": "Paris"}),
                             ToolCall("c2", "mcp__fs__read", {}),
                             ToolCall("c3", "apply_patch", {"input": "*** Begin Patch"})]
    results = req.messages[2].parts
    assert [(r.call_id, r.content) for r in results] == [("c1", "Sunny"), ("c2", "file text"), ("c3", "Done!")]
    assert len(results[1].images) == 1
    assert req.messages[3].parts == [Reasoning("someone else's"), Text("ok")]


def test_local_shell_history_round_trips_for_codex_models():
    req, _ = codec.decode({"model": CODEX, "tools": [{"type": "local_shell"}], "input": [
        {"role": "user", "content": "q"},
        {"type": "local_shell_call", "id": "lsh_1", "call_id": "s1", "status": "completed",
         "action": {"type": "exec", "command": ["ls", "-l"], "timeout_ms": 1000, "env": {}}},
        {"type": "local_shell_call_output", "id": "s1", "output": "total 0"}]}, CATALOG, IMAGES)
    assert req.messages[1].parts == [ToolCall("s1", "local_shell", {"command": ["ls", "-l"], "timeout_ms": 1000})]
    assert req.messages[2].parts[0].call_id == "s1" and req.messages[2].parts[0].content == "total 0"


@pytest.mark.parametrize("effort,model,expect", [
    ("high", FLASH, "high"), ("low", FLASH, "high"), ("minimal", FLASH, "high"), ("none", FLASH, None),
    ("medium", VISION, "high"), ("xhigh", CODEX, "xhigh"), (None, FLASH, None)])
def test_reasoning_effort_is_clamped(effort, model, expect):
    body = {"model": model, "input": "q", "reasoning": {"effort": effort, "summary": "auto"}}
    assert codec.decode(body, CATALOG, IMAGES)[0].reasoning_effort == expect


def test_accepted_fields_and_text_format():
    req, turn = decode({"input": "q", "max_output_tokens": 500, "temperature": 0.5,
                        "parallel_tool_calls": False, "prompt_cache_key": "k", "metadata": {"a": "b"},
                        "service_tier": "auto", "include": ["reasoning.encrypted_content"],
                        "client_metadata": {"x": "y"}, "truncation": "auto", "store": False,
                        "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "out",
                                                                "strict": True, "schema": {"type": "object"}}}})
    assert (req.max_tokens, req.temperature) == (500, 0.5)
    assert turn.include_encrypted and turn.store is False
    assert "JSON schema" in req.system[-1].text and '{"type":"object"}' in req.system[-1].text
    assert turn.echo["parallel_tool_calls"] is False and turn.echo["metadata"] == {"a": "b"}


@pytest.mark.parametrize("body,param", [
    ({"input": 5}, "input"),
    ({"input": None}, "input"),
    ({"input": [5]}, "input[0]"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": "q", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"input": "q", "background": True}, "background"),
    ({"input": "q", "conversation": "conv_1"}, "conversation"),
    ({"input": "q", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "q", "max_output_tokens": 0}, "max_output_tokens"),
])
def test_malformed_requests_name_the_field(body, param):
    assert invalid(body).param == param


def test_continuing_a_stored_response_prepends_its_input_and_output():
    previous = {"response": {"id": "resp_prev", "model": FLASH, "output": [
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "get_weather", "arguments": "{}"}]},
        "input": [{"role": "user", "content": "q"}], "own_from": 0}
    req, turn = codec.decode({"input": [{"type": "function_call_output", "call_id": "c1", "output": "ok"}],
                              "tools": [WEATHER]}, CATALOG, IMAGES, previous)
    assert [m.role for m in req.messages] == ["user", "assistant", "tool"]
    assert turn.echo["previous_response_id"] == "resp_prev" and turn.model == FLASH   # model inherited
    assert turn.own_from == 2 and len(turn.input_items) == 3


# ---- encode ------------------------------------------------------------------------------------

def turn(**kw) -> codec.Turn:
    base = dict(id="resp_test", model=FLASH, created_at=1, tools={}, include_encrypted=True,
                store=False, echo={**codec._ECHO, "tools": [], "reasoning": {"effort": None, "summary": None},
                                   "text": {"format": {"type": "text"}}})
    return codec.Turn(**{**base, **kw})


def frames(data: bytes) -> list[dict]:
    out = []
    for block in data.decode().split("\n\n"):
        if block.strip():
            kind, payload = block.split("\n", 1)
            event = json.loads(payload[len("data: "):])
            assert kind == f"event: {event['type']}"
            EVENT_TYPES[event["type"]].model_validate(event)     # the SDK's own types accept it
            out.append(event)
    return out


def encode(events, t=None, on_done=None) -> list[dict]:
    enc = codec.ResponseEncoder(t or turn(), on_done)
    return frames(b"".join(enc.event(ev) for ev in events))


def test_the_event_sequence_ids_and_sequence_numbers():
    events = encode([ReasoningDelta("Let me "), ReasoningDelta("think."), ReasoningDelta("", "sig"),
                     TextDelta("Hel"), TextDelta("lo"),
                     ToolCallEvent("call_1", "get_weather", {"city": "Paris"}),
                     Finish("tool_calls", Usage(100, 20, 60, 5, 7))])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert {e["response"]["id"] for e in events if "response" in e} == {"resp_test"}
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["output_index"] for e in done] == [0, 1, 2]
    reasoning, message, call = (e["item"] for e in done)
    assert codec.decode_reasoning(reasoning["encrypted_content"]) == ("Let me think.", "sig")
    assert message["content"][0]["text"] == "Hello"
    assert [e["text"] for e in events if e["type"] == "response.output_text.done"] == ["Hello"]
    assert call["call_id"] == "call_1" and json.loads(call["arguments"]) == {"city": "Paris"}
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed" and [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    assert final.usage.input_tokens == 100 and final.usage.input_tokens_details.cached_tokens == 60
    assert final.usage.input_tokens_details.cache_write_tokens == 5
    assert final.usage.output_tokens_details.reasoning_tokens == 7 and final.usage.total_tokens == 120


def test_custom_namespaced_and_local_shell_calls_come_back_in_their_own_form():
    names = {"apply_patch": codec.ClientTool("custom", "apply_patch"),
             "mcp__fs__read": codec.ClientTool("function", "read", "mcp__fs"),
             "local_shell": codec.ClientTool("local_shell", "local_shell")}
    events = encode([ToolCallEvent("c1", "apply_patch", {"input": "*** Begin Patch\n"}),
                     ToolCallEvent("c2", "mcp__fs__read", {"path": "a"}),
                     ToolCallEvent("c3", "local_shell", {"command": ["ls"]}),
                     Finish("tool_calls", Usage())], turn(tools=names))
    kinds = [e["type"] for e in events]
    assert "response.custom_tool_call_input.delta" in kinds and "response.custom_tool_call_input.done" in kinds
    custom, fn, shell = (e["item"] for e in events if e["type"] == "response.output_item.done")
    assert (custom["type"], custom["name"], custom["input"]) == ("custom_tool_call", "apply_patch", "*** Begin Patch\n")
    assert (fn["type"], fn["name"], fn["namespace"]) == ("function_call", "read", "mcp__fs")
    assert (shell["type"], shell["action"]["command"]) == ("local_shell_call", ["ls"])


@pytest.mark.parametrize("reason,status,detail", [("length", "incomplete", "max_output_tokens"),
                                                   ("content_filter", "incomplete", "content_filter"),
                                                   ("stop", "completed", None)])
def test_how_an_answer_ends(reason, status, detail):
    last = encode([TextDelta("cut"), Finish(reason, Usage(1, 1))])[-1]
    assert last["type"] == f"response.{status}" and last["response"]["status"] == status
    assert (last["response"]["incomplete_details"] or {}).get("reason") == detail


def test_failure_after_output_is_response_failed_and_silence_is_real_events():
    enc = codec.ResponseEncoder(turn())
    first = frames(enc.heartbeat())
    assert [e["type"] for e in first] == ["response.created", "response.in_progress"]
    again = frames(enc.heartbeat())
    assert [e["type"] for e in again] == ["response.in_progress"] and again[0]["sequence_number"] == 2
    enc.event(TextDelta("Hel"))
    failed = frames(enc.error(errors.UpstreamError("cut short", code="upstream_truncated")))
    assert failed[-1]["type"] == "response.failed"
    assert failed[-1]["response"]["error"] == {"code": "server_error", "message": "cut short"}
    assert failed[-1]["response"]["output"][0]["status"] == "incomplete"


@pytest.mark.parametrize("err,code", [
    (errors.Overloaded("busy"), "server_is_overloaded"),               # Codex backs off
    (errors.InsufficientCredits("no credits"), "insufficient_quota"),  # Codex stops retrying
    (errors.RateLimited("slow", retry_after=7), "rate_limit_exceeded"),
    (errors.InvalidRequest("bad"), "invalid_prompt"),
    (errors.UpstreamTimeout("silent"), "server_error")])
def test_failure_codes_codex_acts_on(err, code):
    failed = codec.failure(err)
    assert failed["code"] == code
    if code == "rate_limit_exceeded":
        assert failed["message"].endswith("try again in 7s.")      # Codex parses the delay


def test_the_store_callback_runs_before_completed_and_keeps_encrypted_reasoning():
    seen = []
    enc = codec.ResponseEncoder(turn(include_encrypted=False), seen.append)
    out = enc.event(ReasoningDelta("r")) + enc.event(TextDelta("t"))
    assert seen == []
    out += enc.event(Finish("stop", Usage()))
    [stored] = seen
    assert "encrypted_content" in stored["output"][0]                 # kept for continuing
    public_done = [e for e in frames(out) if e["type"] == "response.output_item.done"][0]["item"]
    assert "encrypted_content" not in public_done                     # not asked for
    assert "encrypted_content" not in enc.response["output"][0]


def test_a_whole_response_is_the_streamed_one():
    evs = [ReasoningDelta("r"), TextDelta("a"), Finish("stop", Usage(3, 4))]
    t = turn()
    streamed = encode(evs, t)[-1]["response"]
    assert codec.response(evs, t)["output"] != [] and \
        [o["type"] for o in codec.response(evs, t)["output"]] == [o["type"] for o in streamed["output"]]
    with pytest.raises(errors.UpstreamError):
        codec.response([TextDelta("a")], t)


# ---- end to end: the openai SDK against gunicorn -----------------------------------------------

#: route -> (gateway fixture, model, upstream path)
ROUTES = {"cli": ("gateway", FLASH, GENERATE), "provider-chat": ("provider_gateway", FLASH, CHAT),
          "provider-messages": ("provider_gateway", CLAUDE, MESSAGES)}
WIRE = {GENERATE: "generate", CHAT: "chat", MESSAGES: "messages"}


class Target:
    def __init__(self, server, model, path, fake):
        self.server, self.model, self.path, self.fake = server, model, path, fake
        self.client = openai.OpenAI(base_url=server.url + "/v1", api_key=LOCAL_KEY, max_retries=0,
                                    timeout=30)

    def calls(self) -> list[dict]:
        calls = [r for r in self.fake.requests if r["method"] == "POST"]
        assert calls and {r["path"] for r in calls} == {self.path}, [r["path"] for r in calls]
        return calls

    def create(self, stream: bool, **kw):
        """``responses.create`` whole, or ``responses.stream`` with every event type-checked;
        the streamed final response must equal the one ``response.completed`` carried."""
        kw.setdefault("model", self.model)
        if not stream:
            return self.client.responses.create(**kw)
        with self.client.responses.stream(**kw) as s:
            events = list(s)
            final = s.get_final_response()
        for e in events:        # checked against the SDK's own types, strictly
            EVENT_TYPES[e.type].model_validate(e.model_dump(mode="json", exclude_none=True, warnings=False))
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert final.id == events[-1].response.id
        return final


@pytest.fixture(params=list(ROUTES))
def target(request, fake):
    fixture, model, path = ROUTES[request.param]
    return Target(request.getfixturevalue(fixture), model, path, fake)


def _usage(r, name):
    u = USAGE[name]
    assert (r.usage.input_tokens, r.usage.output_tokens) == (u["input"], u["output"])
    assert r.usage.input_tokens_details.cached_tokens == u["cache_read"]
    assert r.usage.total_tokens == u["input"] + u["output"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_text_and_usage(target, stream):
    r = target.create(stream, input="Say hello", instructions="Be brief.")
    assert (r.status, r.output_text, r.model) == ("completed", "Hello world", target.model)
    _usage(r, "text")
    target.calls()


def test_streamed_and_whole_answers_are_the_same_response(target):
    whole = target.create(False, input="[[reasoning]] 2+2?")
    streamed = target.create(True, input="[[reasoning]] 2+2?")
    def strip(r):       # ids differ per response; the stream helper adds parsed: None
        return [{k: v for k, v in o.model_dump(exclude_none=True).items() if k != "id"}
                for o in r.output]
    assert strip(whole) == strip(streamed) and whole.usage == streamed.usage


def test_reasoning_survives_a_tool_loop(target):
    """With ``include: ["reasoning.encrypted_content"]`` the reasoning item carries ours; sent
    back, it reaches upstream as the model's reasoning (DeepSeek refuses a tool turn without)."""
    first = target.create(True, input="[[reasoning]] think", include=["reasoning.encrypted_content"],
                          store=False)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Let me think."
    assert reasoning.encrypted_content.startswith(codec.ENCRYPTED_PREFIX)
    history = [{"role": "user", "content": "[[reasoning]] think"},
               *[o.model_dump(exclude_none=True) for o in first.output],
               {"role": "user", "content": "[[echo]] and then?"}]
    second = target.create(False, input=history, store=False)
    assert second.output_text == "and then?"
    sent = json.dumps(target.calls()[-1]["body"])
    assert "Let me think." in sent


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_function_call_round_trip(target, stream):
    ask = '[[call:get_weather={"city": "Paris"}]] weather?'
    first = target.create(stream, input=ask, tools=[WEATHER], store=False)
    [call] = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Paris"})
    second = target.create(stream, tools=[WEATHER], store=False, input=[
        {"role": "user", "content": ask}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}])
    assert second.output_text == CALL_ANSWER_PREFIX + "Sunny, 21 C"
    assert tool_results_after_last_call(target.calls()[-1]["body"], WIRE[target.path]) == ["Sunny, 21 C"]


def test_custom_tool_round_trip(target):
    ask = '[[call:apply_patch={"input": "*** Begin Patch\\n*** End Patch"}]] fix it'
    first = target.create(True, input=ask, tools=[PATCH], store=False)
    [call] = first.output
    assert (call.type, call.name, call.input) == ("custom_tool_call", "apply_patch", "*** Begin Patch\n*** End Patch")
    second = target.create(True, tools=[PATCH], store=False, input=[
        {"role": "user", "content": ask}, call.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}])
    assert second.output_text == CALL_ANSWER_PREFIX + "Done!"


def test_namespaced_tool_comes_back_with_its_namespace(target):
    first = target.create(False, input='[[call:mcp__fs__read={"path": "a.txt"}]] read', tools=[FS, WEATHER,
                                                                                                   {"type": "web_search"}])
    [call] = first.output
    assert (call.name, call.namespace, json.loads(call.arguments)) == ("read", "mcp__fs", {"path": "a.txt"})
    body = target.calls()[-1]["body"]
    assert "mcp__fs__read" in json.dumps(body) and "web_search" not in json.dumps(body.get("tools", body))


def test_images_reach_the_model(target, fake):
    model = VISION if target.model == FLASH else target.model
    r = target.create(False, model=model, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "[[image]] what is it?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}])
    assert r.output_text == "images=1"


def test_errors_before_output_are_http_errors(target):
    with pytest.raises(openai.APIStatusError) as info:
        target.create(True, input="[[error_first]] hi")
    assert info.value.status_code == 402
    with pytest.raises(openai.RateLimitError):
        target.create(False, input="[[http_429_throttle]] hi")


def test_a_plan_window_is_usage_limit_reached_with_resets_at(target):
    """Codex shows ``usage_limit_reached`` (with its reset time) instead of retrying."""
    with pytest.raises(openai.RateLimitError) as info:
        target.create(False, input="[[http_429_window]] hi")
    err = info.value.body
    assert err["type"] == "usage_limit_reached" and err["code"] == "usage_limit_reached"
    assert isinstance(err["resets_at"], int) and err["resets_at"] > 1_700_000_000


def test_a_failure_after_output_is_response_failed_never_completed(target):
    with target.client.responses.stream(model=target.model, input="[[error_after_text]] hi") as s:
        types = [e.type for e in s]
    assert types[-1] == "response.failed" and "response.completed" not in types


def test_a_truncated_stream_is_never_completed(target):
    r = requests.post(target.server.url + "/v1/responses", timeout=30, stream=False,
                      headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                      json={"model": target.model, "input": "[[truncated]] hi", "stream": True})
    types = [json.loads(line[6:])["type"] for line in r.text.splitlines() if line.startswith("data: ")]
    assert types[-1] == "response.failed" and "response.completed" not in types
    with pytest.raises(openai.APIStatusError) as info:
        target.create(False, input="[[truncated]] hi")
    assert info.value.status_code == 502


def test_silence_gets_real_events_not_comments(gateway, fake):
    """Codex's idle timer counts events; an SSE comment would not reset it."""
    r = requests.post(gateway.url + "/responses", timeout=30,       # also: no /v1 prefix
                      headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                      json={"model": FLASH, "input": "[[silence:1.6]] hi", "stream": True})
    assert r.status_code == 200 and not any(line.startswith(":") for line in r.text.splitlines())
    types = [json.loads(line[6:])["type"] for line in r.text.splitlines() if line.startswith("data: ")]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.in_progress") >= 3 and types[-1] == "response.completed"


# ---- stored responses ---------------------------------------------------------------------------

def test_store_retrieve_list_delete(gateway, fake):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0)
    r = c.responses.create(model=FLASH, input="Say hello", include=["reasoning.encrypted_content"])
    got = c.responses.retrieve(r.id)
    assert (got.id, got.output_text, got.status) == (r.id, "Hello world", "completed")
    items = c.responses.input_items.list(r.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as info:
        c.responses.create(model=FLASH, input="again", previous_response_id=r.id)
    assert info.value.body["param"] == "previous_response_id"
    assert "whole conversation" in info.value.body["message"]
    unstored = c.responses.create(model=FLASH, input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(unstored.id)


@pytest.fixture(scope="module")
def two_gateways(fake_server, tmp_path_factory):
    """Two gunicorns (2 workers each) on one config and state folder: a continuation served by
    the other one is certainly served by another process than the one that stored it."""
    folder = tmp_path_factory.mktemp("responses-shared")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_server.url, folder)))
    servers = [Gunicorn(str(path), free_port()).wait_ready() for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()
        assert "Traceback" not in s.log()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_previous_response_id_continues_on_another_process(two_gateways, fake, stream):
    a, b = (openai.OpenAI(base_url=s.url + "/v1", api_key=LOCAL_KEY, max_retries=0) for s in two_gateways)
    ask = '[[call:get_weather={"city": "Paris"}]] weather?'
    if stream:
        with a.responses.stream(model=FLASH, input=ask, tools=[WEATHER]) as s:
            list(s)
            first = s.get_final_response()
    else:
        first = a.responses.create(model=FLASH, input=ask, tools=[WEATHER])
    call = first.output[0]
    second = b.responses.create(model=FLASH, previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "Rainy"}])
    assert second.output_text == CALL_ANSWER_PREFIX + "Rainy" and second.previous_response_id == first.id
    third = a.responses.create(model=FLASH, previous_response_id=second.id, input="[[echo]] thanks")
    assert third.output_text == "thanks"
    body = fake.requests[-1]["body"]["params"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert [i.type for i in b.responses.input_items.list(third.id, order="asc").data] == ["message"]


def test_store_responses_off_and_the_file_mode(fake, tmp_path):
    from gateway import create_app
    app = create_app(gateway_config(fake.url, tmp_path, store_responses=False))
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    r = c.post("/v1/responses", json={"model": FLASH, "input": "hi"})
    assert r.status_code == 200 and r.json["store"] is False
    r = c.get(f"/v1/responses/{r.json['id']}")
    assert r.status_code == 404 and "store_responses" in r.json["error"]["message"]
    assert not (tmp_path / "state.sqlite3").exists()
    on = create_app(gateway_config(fake.url, tmp_path / "on", usage_file=str(tmp_path / "on" / "u.json")))
    (tmp_path / "on").mkdir(exist_ok=True)
    c = on.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    assert c.post("/v1/responses", json={"model": FLASH, "input": "hi"}).status_code == 200
    import os
    import stat
    assert stat.S_IMODE(os.stat(tmp_path / "on" / "state.sqlite3").st_mode) == 0o600


def test_responses_count_in_usage(gateway, fake):
    auth = {"Authorization": f"Bearer {LOCAL_KEY}"}
    model = "zai-org/GLM-5"
    before = requests.get(gateway.url + "/usage", headers=auth, timeout=5).json()["models"].get(model, {})
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0)
    c.responses.create(model=model, input="hi", store=False)
    with c.responses.stream(model=model, input="[[cache]] hi", store=False) as s:
        list(s)
    after = requests.get(gateway.url + "/usage", headers=auth, timeout=5).json()["models"][model]
    assert after["total_requests"] - before.get("total_requests", 0) == 2
    assert after["prompt_tokens"] - before.get("prompt_tokens", 0) == USAGE["text"]["input"] + USAGE["cache"]["input"]


def test_retrieve_shows_encrypted_reasoning_only_when_included(gateway, fake):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0)
    r = c.responses.create(model=FLASH, input="[[reasoning]] 2+2?")
    assert r.output[0].type == "reasoning" and r.output[0].encrypted_content is None
    assert c.responses.retrieve(r.id).output[0].encrypted_content is None
    shown = c.responses.retrieve(r.id, include=["reasoning.encrypted_content"]).output[0]
    assert codec.decode_reasoning(shown.encrypted_content) == ("Let me think.", "")


def test_tool_choice_none_sends_no_tools_and_json_object_is_an_instruction(gateway, fake):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0)
    c.responses.create(model=FLASH, input="hi", tools=[WEATHER], tool_choice="none",
                       text={"format": {"type": "json_object"}}, user="u-1", store=False)
    params = fake.requests[-1]["body"]["params"]
    assert not params.get("tools")
    assert "one JSON object only" in json.dumps(params["system"])


def test_item_references_are_resolved_from_the_store(gateway, fake):
    """``@ai-sdk/openai`` stores by default and then sends its earlier answers as
    ``item_reference``; an id the gateway never stored is a 404, never a shorter conversation."""
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0)
    first = c.responses.create(model=FLASH, input="Say hello")
    second = c.responses.create(model=FLASH, input=[
        {"role": "user", "content": "Say hello"}, {"type": "item_reference", "id": first.output[0].id},
        {"role": "user", "content": "[[echo]] and again"}])
    assert second.output_text == "and again"
    params = fake.requests[-1]["body"]["params"]
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    assert params["messages"][1]["content"][0]["text"] == "Hello world"
    with pytest.raises(openai.NotFoundError) as info:
        c.responses.create(model=FLASH, input=[{"type": "item_reference", "id": "msg_unknown"}])
    assert info.value.body["param"] == "input[0].id"


def test_a_failed_stream_keeps_what_was_already_streamed():
    enc = codec.ResponseEncoder(turn())
    enc.event(ReasoningDelta("thinking"))
    enc.event(TextDelta("Hel"))
    failed = frames(enc.error(errors.UpstreamError("cut")))[-1]["response"]
    reasoning, message = failed["output"]
    assert reasoning["summary"][0]["text"] == "thinking"
    assert (message["status"], message["content"][0]["text"]) == ("incomplete", "Hel")
