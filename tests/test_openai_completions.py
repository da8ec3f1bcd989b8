"""Legacy Completions (``gateway/codecs/openai_completions.py`` and its route): the codec on its
own, then the official ``openai`` SDK's ``client.completions`` -> gunicorn -> fake upstream, on
the CLI route and on the Provider API."""
from __future__ import annotations

import json

import openai
import pytest
import requests

from gateway import errors
from gateway.canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, Finish, Message,
                               ReasoningDelta, Text, TextDelta, ToolCallEvent, Usage)
from gateway.catalog import Catalog
from gateway.codecs import openai_completions as oc
from gateway.upstream.cli import DEFAULT_SYSTEM
from tests.conftest import LOCAL_KEY, usage_delta
from tests.fake_upstream import PRO_KEY, USAGE
from tests.raw_http import sse_data

FLASH = "deepseek/deepseek-v4-flash"
CATALOG = Catalog.load()


def decode(**fields):
    return oc.decode({"model": FLASH, "prompt": "Say hi", **fields}, CATALOG)


def refused(param: str, **fields) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as info:
        decode(**fields)
    assert info.value.param == param and info.value.status == 400
    return info.value


# ---- decode ------------------------------------------------------------------------------------

def test_the_prompt_becomes_one_user_message_with_no_system_of_its_own():
    req = decode(max_tokens=20, temperature=0.5, stream=True)
    assert req.messages == [Message("user", [Text("Say hi")])]
    assert req.system == [] and req.tools == []
    assert (req.max_tokens, req.temperature, req.stream) == (20, 0.5, True)
    assert req.model.id == FLASH and req.reasoning_effort is None


def test_a_list_of_exactly_one_prompt_is_that_prompt():
    assert decode(prompt=["Say hi"]).messages == [Message("user", [Text("Say hi")])]


@pytest.mark.parametrize("prompt,words", [
    (["one", "two"], "one prompt per request"),
    ([1, 2, 3], "token arrays"),
    ([[1, 2]], "token arrays"),
    ([], "token arrays"),
    (None, "required"),
    (7, "must be a string"),
    ("  ", "must not be empty"),
])
def test_prompts_a_chat_model_cannot_take_are_400s_naming_prompt(prompt, words):
    assert words in refused("prompt", prompt=prompt).message


@pytest.mark.parametrize("fields,param", [
    ({"echo": True}, "echo"),
    ({"suffix": "return x"}, "suffix"),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "best_of"),
    ({"logprobs": 5}, "logprobs"),
    ({"stop": 3}, "stop"),
    ({"stop": ["ok", 1]}, "stop"),
    ({"temperature": 2.5}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "many"}, "max_tokens"),
    ({"stream_options": "yes"}, "stream_options"),
])
def test_what_cannot_be_done_is_a_400_naming_the_field(fields, param):
    refused(param, **fields)


def test_legacy_options_at_their_defaults_and_unused_parameters_are_accepted():
    req = decode(echo=False, suffix="", n=1, best_of=1, logprobs=0, stop=["\n\n", "END"],
                 user="u-1", seed=3, presence_penalty=0.5, frequency_penalty=0.1, top_p=0.9,
                 logit_bias={"50256": -100}, stream_options={"include_usage": False})
    assert req.messages == [Message("user", [Text("Say hi")])]
    decode(suffix=None, logprobs=None, stop="\n", n=None)


def test_an_unknown_model_is_a_404_naming_model():
    with pytest.raises(errors.NotFound) as info:
        oc.decode({"model": "no-such-model", "prompt": "hi"}, CATALOG)
    assert info.value.param == "model"


# ---- encode ------------------------------------------------------------------------------------

def test_stream_chunks_are_text_completions_then_finish_usage_and_done():
    enc = oc.ChunkEncoder(FLASH)
    usage = Usage(input_tokens=100, output_tokens=7, cache_read_tokens=64, reasoning_tokens=3)
    raw = (enc.event(TextDelta("Hel")) + enc.event(ReasoningDelta("hmm"))
           + enc.event(TextDelta("lo")) + enc.event(Finish(STOP, usage)))
    chunks = sse_data(raw)
    assert chunks[-1] == "[DONE]"
    first, second, finish, usage_chunk = chunks[:-1]
    for c in (first, second, finish, usage_chunk):
        assert (c["id"], c["object"], c["model"]) == (enc.id, "text_completion", FLASH)
        assert c["id"].startswith("cmpl-") and c["created"] == enc.created
    assert first["choices"] == [{"text": "Hel", "index": 0, "logprobs": None, "finish_reason": None}]
    assert second["choices"][0]["text"] == "lo"           # the reasoning in between was dropped
    assert finish["choices"] == [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 100
    assert usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["total_tokens"] == 107
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 64
    assert usage_chunk["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


@pytest.mark.parametrize("reason,expected", [(LENGTH, "length"), (CONTENT_FILTER, "content_filter"),
                                             (TOOL_CALLS, "stop")])
def test_finish_reasons_are_the_legacy_ones(reason, expected):
    chunks = sse_data(oc.ChunkEncoder(FLASH).event(Finish(reason, Usage())))
    assert chunks[0]["choices"][0]["finish_reason"] == expected
    whole = oc.completion([TextDelta("x"), Finish(reason, Usage())], FLASH)
    assert whole["choices"][0]["finish_reason"] == expected


def test_reasoning_and_tool_calls_send_nothing_but_long_reasoning_keeps_the_stream_alive():
    quiet = oc.ChunkEncoder(FLASH)
    assert quiet.event(ReasoningDelta("thinking")) == b""
    assert quiet.event(ToolCallEvent("c1", "read", {})) == b""
    assert quiet.event(TextDelta("")) == b""
    eager = oc.ChunkEncoder(FLASH, keepalive=0)     # every reasoning delta is "a while" here
    assert eager.event(ReasoningDelta("thinking")) == b": keep-alive\n\n"
    patient = oc.ChunkEncoder(FLASH, keepalive=3600)
    assert patient.event(ReasoningDelta("thinking")) == b""


def test_an_error_after_the_start_is_an_error_chunk_then_done():
    chunks = sse_data(oc.ChunkEncoder.error(errors.UpstreamError("it broke")))
    assert chunks == [{"error": {"message": "it broke", "type": "server_error",
                                 "code": "upstream_error", "param": None}}, "[DONE]"]


def test_the_whole_object_joins_the_text_and_drops_reasoning():
    events = [ReasoningDelta("hmm"), TextDelta("Hello"), TextDelta(" world"),
              Finish(STOP, Usage(input_tokens=10, output_tokens=2))]
    body = oc.completion(events, FLASH)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == FLASH and isinstance(body["created"], int)
    assert body["choices"] == [{"text": "Hello world", "index": 0, "logprobs": None,
                                "finish_reason": "stop"}]
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"],
            body["usage"]["total_tokens"]) == (10, 2, 12)


# ---- end to end: the openai SDK, on both routes --------------------------------------------------

ROUTES = {"cli": "gateway", "provider": "provider_gateway"}      # route -> gunicorn fixture


class Target:
    def __init__(self, route, server, fake):
        self.route, self.server, self.fake = route, server, fake
        self.client = openai.OpenAI(base_url=server.url + "/v1", api_key=LOCAL_KEY,
                                    max_retries=0, timeout=30)

    def create(self, prompt: str, stream: bool, **kw):
        """(text, finish_reason, usage) as the SDK shows them."""
        if not stream:
            r = self.client.completions.create(model=FLASH, prompt=prompt, **kw)
            assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == FLASH
            assert len(r.choices) == 1 and r.choices[0].index == 0 and r.choices[0].logprobs is None
            return r.choices[0].text, r.choices[0].finish_reason, r.usage
        text, reasons, usage = [], [], None
        for chunk in self.client.completions.create(model=FLASH, prompt=prompt, stream=True, **kw):
            assert chunk.object == "text_completion" and chunk.model == FLASH
            for choice in chunk.choices:
                text.append(choice.text)
                if choice.finish_reason:
                    reasons.append(choice.finish_reason)
            if chunk.usage:
                usage = chunk.usage
        assert len(reasons) == 1, reasons
        return "".join(text), reasons[0], usage

    def upstream_messages(self) -> tuple[str | None, list]:
        """(system prompt, messages) of the last model call the fake received."""
        call = [r for r in self.fake.requests if r["method"] == "POST"][-1]
        if self.route == "cli":
            params = call["body"]["params"]
            return params.get("system"), params["messages"]
        messages = call["body"]["messages"]
        system = [m for m in messages if m["role"] == "system"]
        return (system[0]["content"] if system else None,
                [m for m in messages if m["role"] != "system"])


@pytest.fixture(params=list(ROUTES))
def target(request, fake):
    return Target(request.param, request.getfixturevalue(ROUTES[request.param]), fake)


def user_text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_text_finish_and_usage(target, stream):
    text, reason, usage = target.create("Say hello", stream, max_tokens=50)
    u = USAGE["text"]
    assert (text, reason) == ("Hello world", "stop")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == \
        (u["input"], u["output"], u["input"] + u["output"])
    assert usage.prompt_tokens_details.cached_tokens == u["cache_read"]
    system, messages = target.upstream_messages()
    # the prompt went as the one user message; the system is the gateway's default (CLI route)
    # or none (Provider API), never one of the caller's
    assert [m["role"] for m in messages] == ["user"] and user_text(messages[0]) == "Say hello"
    assert system == (DEFAULT_SYSTEM if target.route == "cli" else None)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_an_answer_cut_by_the_limit_finishes_with_length(target, stream):
    text, reason, _ = target.create("[[length]]", stream)
    assert (text, reason) == ("This answer was cut", "length")


def test_reasoning_is_dropped_but_counted(target):
    for stream in (True, False):
        text, reason, usage = target.create("[[reasoning]] 2+2?", stream)
        assert (text, reason) == ("4", "stop")
        assert usage.completion_tokens == USAGE["reasoning"]["output"]
        assert usage.completion_tokens_details.reasoning_tokens == USAGE["reasoning"]["reasoning"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_an_error_before_any_output_is_a_real_http_error(target, stream):
    with pytest.raises(openai.RateLimitError):
        target.create("[[error_first:429]]", stream)


def test_a_truncated_stream_is_an_error_never_a_clean_finish(target):
    with pytest.raises(openai.APIError):
        target.create("[[truncated]] hi", True)
    with pytest.raises(openai.APIStatusError) as info:
        target.create("[[truncated]] hi", False)
    assert info.value.status_code == 502


def test_a_failure_after_output_started_is_an_error_chunk(target):
    with pytest.raises(openai.APIError) as info:
        target.create("[[error_after_text]]", True)
    assert "overloaded" in str(info.value).lower()


def test_refusals_reach_the_sdk_as_400s_naming_the_field(target):
    with pytest.raises(openai.BadRequestError) as info:
        target.client.completions.create(model=FLASH, prompt="hi", echo=True)
    assert info.value.body["param"] == "echo"
    with pytest.raises(openai.BadRequestError) as info:
        target.client.completions.create(model=FLASH, prompt=["a", "b"])
    assert info.value.body["param"] == "prompt"
    with pytest.raises(openai.NotFoundError):
        target.client.completions.create(model="no-such-model", prompt="hi")
    assert [r for r in target.fake.requests if r["method"] == "POST"] == []


def test_the_route_without_v1_and_raw_sse_shape(gateway, fake):
    auth = {"Authorization": f"Bearer {LOCAL_KEY}"}
    r = requests.post(gateway.url + "/completions", headers=auth, timeout=10,
                      json={"model": FLASH, "prompt": "hi"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "Hello world"
    r = requests.post(gateway.url + "/v1/completions", headers=auth, timeout=10, stream=True,
                      json={"model": FLASH, "prompt": "hi", "stream": True})
    assert r.headers["Content-Type"].startswith("text/event-stream")
    chunks = sse_data(r.content)
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"] == []
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in chunks[:-1]}) == 1
    r = requests.post(gateway.url + "/completions", timeout=10, json={"model": FLASH, "prompt": "hi"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_usage_counts_completions_like_chat(gateway, fake):
    """The same calls through /v1/completions and /v1/chat/completions count the same in /usage."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0,
                           timeout=30)
    legacy, chat = "zai-org/GLM-5.1", "zai-org/GLM-5.2-Fast"
    with usage_delta(gateway, legacy, chat) as got:
        client.completions.create(model=legacy, prompt="[[text]]")
        list(client.completions.create(model=legacy, prompt="[[cache]]", stream=True))
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model=legacy, prompt="[[http_429_throttle]]")
        msgs = lambda text: [{"role": "user", "content": text}]     # noqa: E731
        client.chat.completions.create(model=chat, messages=msgs("[[text]]"))
        list(client.chat.completions.create(model=chat, messages=msgs("[[cache]]"), stream=True))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=chat, messages=msgs("[[http_429_throttle]]"))
    got_l, got_c = got[legacy], got[chat]
    assert got_l == got_c
    text, cache = USAGE["text"], USAGE["cache"]
    assert got_l["total_requests"] == 3 and got_l["failed_requests"] == 1
    assert got_l["prompt_tokens"] == text["input"] + cache["input"]
    assert got_l["completion_tokens"] == text["output"] + cache["output"]
    assert got_l["cache_read_tokens"] == text["cache_read"] + cache["cache_read"]


def test_provider_route_uses_the_provider_key(provider_gateway, fake):
    client = openai.OpenAI(base_url=provider_gateway.url + "/v1", api_key=LOCAL_KEY,
                           max_retries=0, timeout=30)
    assert client.completions.create(model=FLASH, prompt="hi").choices[0].text == "Hello world"
    call = [r for r in fake.requests if r["method"] == "POST"][-1]
    assert call["path"] == "/provider/v1/chat/completions"
    assert call["headers"].get("authorization") == f"Bearer {PRO_KEY}"
