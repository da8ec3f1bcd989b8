"""Real Python client libraries -- LangChain and LiteLLM -- against a real gunicorn and the fake upstream.

Each test drives a library exactly as its users do (``ChatOpenAI`` / ``ChatAnthropic`` with a
``base_url``, ``litellm.completion`` with an ``api_base``) on both upstream routes: the CLI route
(``gateway``, ``/alpha/generate``) and the Provider API (``provider_gateway``: Claude models on
``/provider/v1/messages``, any other model on ``/provider/v1/chat/completions``, including the
cross cases where a library of one surface asks for a model of the other endpoint).  What the
library shows -- text, tool name and arguments, usage numbers, error class -- is checked against
what the fake upstream played and what it received, never merely that nothing raised.

No internet: LiteLLM would fetch its model-cost map from GitHub at import time, retrying in the
background for seconds (``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps it on the bundled copy).
tiktoken downloads encodings on first use, but LiteLLM sets ``TIKTOKEN_CACHE_DIR`` at import to
the encodings its wheel ships, and its one use here (``cl100k_base``, loaded lazily on the first
``anthropic/`` call) is read from there; LangChain uses tiktoken only in ``get_num_tokens``,
which no test calls.  LangSmith tracing is forced off.  ``no_internet`` refuses, and fails the test on, any connection
or DNS look-up for a host outside the loopback range, during the imports and during every test.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import operator
import os
import socket

import pytest

from tests.conftest import LOCAL_KEY
from tests.fake_upstream import CALL_ANSWER_PREFIX, USAGE, tool_results_after_last_call

GENERATE = "/alpha/generate"
CHAT = "/provider/v1/chat/completions"
MESSAGES = "/provider/v1/messages"
FLASH = "deepseek/deepseek-v4-flash"
CLAUDE = "claude-sonnet-5"
TOOL_RESULT = "Sunny, 21 C"
TOOL_ARGS = {"city": "Paris"}
TOOL_QUESTION = f"[[call:get_weather={json.dumps(TOOL_ARGS)}]] What is the weather in Paris?"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                  "required": ["city"]}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                 "parameters": WEATHER_SCHEMA}}


# ---- no internet ---------------------------------------------------------------------------------

def _is_local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class no_internet:
    """Refuse (OSError) and record every connect / DNS look-up of a non-loopback host."""

    def __init__(self):
        self.attempts: list[str] = []

    def __enter__(self):
        self._connect, self._getaddrinfo = socket.socket.connect, socket.getaddrinfo
        real_connect, real_getaddrinfo, attempts = self._connect, self._getaddrinfo, self.attempts

        def connect(sock, address):
            host = address[0] if isinstance(address, tuple) else None      # AF_UNIX: a path
            if not _is_local(host):
                attempts.append(f"connect {host}")
                raise OSError(f"the tests have no internet: connect to {host!r} refused")
            return real_connect(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if not _is_local(host):
                attempts.append(f"dns {host}")
                raise socket.gaierror(socket.EAI_NONAME, f"the tests have no internet: {host!r}")
            return real_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
        return self

    def __exit__(self, *exc):
        socket.socket.connect, socket.getaddrinfo = self._connect, self._getaddrinfo
        return False


os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LANGSMITH_TRACING"] = os.environ["LANGCHAIN_TRACING_V2"] = "false"
with no_internet() as _import_guard:
    import anthropic
    import litellm                      # slow (a few seconds): once, for the whole module
    import openai
    from langchain_anthropic import ChatAnthropic
    from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
IMPORT_ATTEMPTS = list(_import_guard.attempts)
litellm.suppress_debug_info = True         # no "Give Feedback / Get Help" banner on each error

pytestmark = [pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"),   # LiteLLM's TypedDicts
              pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")]


@pytest.fixture(autouse=True)
def offline():
    with no_internet() as guard:
        yield
    assert guard.attempts == [], f"a library tried to reach the internet: {guard.attempts}"


def test_the_imports_reached_no_internet():
    assert IMPORT_ATTEMPTS == []
    assert litellm.model_cost, "LiteLLM's bundled model-cost map is loaded"


# ---- routes and what reached upstream ----------------------------------------------------------

class Route:
    def __init__(self, name, server, fake):
        self.name, self.server, self.fake = name, server, fake

    def path_for(self, model: str) -> str:
        if self.name == "cli":
            return GENERATE
        return MESSAGES if model.startswith("claude") else CHAT

    def calls(self, model: str) -> list[dict]:
        """The model calls the fake received, all on the path this route uses for ``model``."""
        calls = [r for r in self.fake.requests if r["method"] == "POST"]
        assert calls and {r["path"] for r in calls} == {self.path_for(model)}, [r["path"] for r in calls]
        return calls

    def wire(self, model: str) -> str:
        return {GENERATE: "generate", CHAT: "chat", MESSAGES: "messages"}[self.path_for(model)]

    def sent_model(self, request) -> str:
        body = request["body"]
        return body["params"]["model"] if self.name == "cli" else body["model"]

    def tool_names(self, request) -> list[str]:
        body = request["body"]
        tools = body["params"].get("tools") if self.name == "cli" else body.get("tools")
        return [t["function"]["name"] if "function" in t else t["name"] for t in tools or []]


def check_tool_round_trip(route, model, first_calls, final_text):
    """The call the library showed, the answer it showed, and what upstream got on each turn."""
    assert [(name, args) for name, args in first_calls] == [("get_weather", TOOL_ARGS)]
    assert final_text == CALL_ANSWER_PREFIX + TOOL_RESULT
    calls = route.calls(model)
    assert len(calls) == 2
    for request in calls:
        assert route.sent_model(request) == model
        assert route.tool_names(request) == ["get_weather"]
    assert tool_results_after_last_call(calls[0]["body"], route.wire(model)) is None
    assert tool_results_after_last_call(calls[1]["body"], route.wire(model)) == [TOOL_RESULT]


def lc_usage(scenario: str) -> dict:
    """LangChain's ``usage_metadata`` numbers for a scenario: input includes the cache."""
    u = USAGE[scenario]
    return {"input_tokens": u["input"], "output_tokens": u["output"], "total_tokens": u["input"] + u["output"],
            "cache_read": u["cache_read"]}


def lc_numbers(usage_metadata) -> dict:
    assert usage_metadata, "no usage_metadata"
    return {"input_tokens": usage_metadata["input_tokens"], "output_tokens": usage_metadata["output_tokens"],
            "total_tokens": usage_metadata["total_tokens"],
            "cache_read": (usage_metadata.get("input_token_details") or {}).get("cache_read")}


# ---- LangChain ---------------------------------------------------------------------------------

LC_CASES = {                      # id -> (chat model class, model, route)
    "openai-cli": ("openai", FLASH, "cli"),
    "openai-provider": ("openai", FLASH, "provider"),
    "openai-provider-claude": ("openai", CLAUDE, "provider"),          # cross: chat surface, messages upstream
    "anthropic-cli": ("anthropic", CLAUDE, "cli"),
    "anthropic-provider": ("anthropic", CLAUDE, "provider"),
    "anthropic-provider-flash": ("anthropic", FLASH, "provider"),      # cross: messages surface, chat upstream
}


class LC:
    def __init__(self, surface, model, route):
        self.surface, self.model, self.route = surface, model, route
        if surface == "openai":
            self.llm = ChatOpenAI(model=model, base_url=route.server.url + "/v1", api_key=LOCAL_KEY,
                                  stream_usage=True, max_retries=0, timeout=30)
        else:
            self.llm = ChatAnthropic(model=model, base_url=route.server.url, api_key=LOCAL_KEY,
                                     max_retries=0, default_request_timeout=30, max_tokens=1024)

    def errors(self):
        return openai if self.surface == "openai" else anthropic


@pytest.fixture(params=list(LC_CASES))
def lc(request, fake):
    surface, model, route_name = LC_CASES[request.param]
    server = request.getfixturevalue("gateway" if route_name == "cli" else "provider_gateway")
    return LC(surface, model, Route(route_name, server, fake))


def test_langchain_invoke(lc):
    msg = lc.llm.invoke("Say hello")
    assert msg.text == "Hello world"
    assert lc_numbers(msg.usage_metadata) == lc_usage("text")
    [call] = lc.route.calls(lc.model)
    assert lc.route.sent_model(call) == lc.model


def test_langchain_stream(lc):
    chunks = list(lc.llm.stream("Say hello"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.text]) >= 2, "the answer came in one piece: not streamed"
    assert "".join(c.text for c in chunks) == "Hello world"
    full = functools.reduce(operator.add, chunks)
    assert full.text == "Hello world"
    assert lc_numbers(full.usage_metadata) == lc_usage("text")
    [call] = lc.route.calls(lc.model)
    body = call["body"]
    if lc.route.name != "cli":
        assert body["stream"] is True


def test_langchain_reasoning_and_its_usage(lc):
    """Thinking never leaks into the text; the reasoning-token count shows where one is known.

    ``ChatOpenAI`` does not extract ``reasoning_content`` (documented: provider-specific
    subclasses do), so only the count can be checked there; and Anthropic's Messages API reports
    no separate reasoning-token count, so an answer from ``/provider/v1/messages`` has none.
    ``ChatAnthropic`` shows the thinking as a ``thinking`` content block.
    """
    msg = lc.llm.invoke("[[reasoning]] 2+2?")
    assert msg.text == "4"
    u = USAGE["reasoning"]
    assert (msg.usage_metadata["input_tokens"], msg.usage_metadata["output_tokens"]) == (u["input"], u["output"])
    if lc.surface == "openai":
        if lc.route.path_for(lc.model) != MESSAGES:
            assert msg.usage_metadata["output_token_details"]["reasoning"] == u["reasoning"]
    else:
        thinking = [b for b in msg.content if isinstance(b, dict) and b.get("type") == "thinking"]
        assert [b["thinking"] for b in thinking] == ["Let me think."]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_langchain_cache_writes(lc, stream):
    """Prompt-cache writes: input includes them, ``input_token_details`` shows them."""
    msg = functools.reduce(operator.add, lc.llm.stream("[[cache]] hi")) if stream else lc.llm.invoke("[[cache]] hi")
    assert msg.text == "cached"
    u = USAGE["cache"]
    m = msg.usage_metadata
    details = m.get("input_token_details") or {}
    written = details.get("cache_creation") or sum(details.get(k) or 0 for k in ("ephemeral_5m_input_tokens",
                                                                                 "ephemeral_1h_input_tokens"))
    assert (m["input_tokens"], m["output_tokens"], details.get("cache_read"), written) == \
        (u["input"], u["output"], u["cache_read"], u["cache_write"]), m


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_langchain_tool_round_trip(lc, stream):
    @tool
    def get_weather(city: str) -> str:
        """Weather for a city"""
        return TOOL_RESULT

    llm = lc.llm.bind_tools([get_weather])
    history = [HumanMessage(TOOL_QUESTION)]
    ai = functools.reduce(operator.add, llm.stream(history)) if stream else llm.invoke(history)
    assert lc_numbers(ai.usage_metadata) == lc_usage("call")
    calls = [(c["name"], c["args"]) for c in ai.tool_calls]
    history += [ai] + [ToolMessage(get_weather.invoke(c["args"]), tool_call_id=c["id"]) for c in ai.tool_calls]
    final = functools.reduce(operator.add, llm.stream(history)) if stream else llm.invoke(history)
    assert final.tool_calls == []
    assert lc_numbers(final.usage_metadata) == lc_usage("call_answer")
    check_tool_round_trip(lc.route, lc.model, calls, final.text)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_langchain_rate_limit_is_the_sdk_rate_limit_error(lc, stream):
    with pytest.raises(lc.errors().RateLimitError) as info:
        if stream:
            list(lc.llm.stream("[[error_first:429]] hi"))
        else:
            lc.llm.invoke("[[error_first:429]] hi")
    assert info.value.status_code == 429
    assert len(lc.route.calls(lc.model)) == 1, "the library retried"


# ---- LiteLLM -----------------------------------------------------------------------------------

LITELLM_CASES = {                 # id -> (litellm provider prefix, model, route)
    "openai-cli": ("openai", FLASH, "cli"),
    "openai-provider": ("openai", FLASH, "provider"),
    "anthropic-cli": ("anthropic", CLAUDE, "cli"),
    "anthropic-provider": ("anthropic", CLAUDE, "provider"),
    "anthropic-provider-flash": ("anthropic", FLASH, "provider"),      # cross
}


class Lite:
    def __init__(self, prefix, model, route):
        self.prefix, self.model, self.route = prefix, model, route
        self.api_base = route.server.url + ("/v1" if prefix == "openai" else "")

    def completion(self, messages, stream=False, **kw):
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        return litellm.completion(model=f"{self.prefix}/{self.model}", api_base=self.api_base,
                                  api_key=LOCAL_KEY, messages=messages, stream=stream, max_retries=0,
                                  num_retries=0, timeout=30, max_tokens=1024, **extra, **kw)

    def ask(self, messages, stream=False, **kw) -> dict:
        """Text, tool calls, usage and the assistant message, from a whole or streamed answer."""
        if not stream:
            r = self.completion(messages, **kw)
            m = r.choices[0].message
            return {"text": m.content or "", "finish": r.choices[0].finish_reason, "usage": r.usage,
                    "calls": [(c.id, c.function.name, json.loads(c.function.arguments)) for c in m.tool_calls or []]}
        chunks = list(self.completion(messages, stream=True, **kw))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        usage = [c.usage for c in chunks if getattr(c, "usage", None)]
        calls: dict[int, list] = {}
        finish = None
        for c in chunks:
            for choice in c.choices:
                finish = choice.finish_reason or finish
                for tc in choice.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, [None, None, ""])
                    entry[0] = entry[0] or tc.id
                    entry[1] = entry[1] or tc.function.name
                    entry[2] += tc.function.arguments or ""
        rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
        assert (rebuilt.choices[0].message.content or "") == "".join(pieces)
        return {"text": "".join(pieces), "pieces": pieces, "finish": finish, "usage": usage[-1] if usage else None,
                "rebuilt_usage": rebuilt.usage,
                "calls": [(i, n, json.loads(a)) for i, n, a in calls.values()]}


def lite_numbers(usage) -> dict:
    assert usage is not None, "no usage"
    details = getattr(usage, "prompt_tokens_details", None)
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "cached_tokens": getattr(details, "cached_tokens", None) or 0}


def lite_usage(scenario: str) -> dict:
    u = USAGE[scenario]
    return {"prompt_tokens": u["input"], "completion_tokens": u["output"], "total_tokens": u["input"] + u["output"],
            "cached_tokens": u["cache_read"]}


@pytest.fixture(params=list(LITELLM_CASES))
def lite(request, fake):
    prefix, model, route_name = LITELLM_CASES[request.param]
    server = request.getfixturevalue("gateway" if route_name == "cli" else "provider_gateway")
    return Lite(prefix, model, Route(route_name, server, fake))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_litellm_text_and_usage(lite, stream):
    r = lite.ask([{"role": "user", "content": "Say hello"}], stream)
    assert r["text"] == "Hello world"
    assert r["finish"] == "stop"
    assert lite_numbers(r["usage"]) == lite_usage("text")
    if stream:
        assert len(r["pieces"]) >= 2, "the answer came in one piece: not streamed"
        assert lite_numbers(r["rebuilt_usage"]) == lite_usage("text")
    [call] = lite.route.calls(lite.model)
    assert lite.route.sent_model(call) == lite.model


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_litellm_tool_round_trip(lite, stream):
    messages = [{"role": "user", "content": TOOL_QUESTION}]
    first = lite.ask(messages, stream, tools=[WEATHER_TOOL])
    assert first["finish"] == "tool_calls"
    assert lite_numbers(first["usage"]) == lite_usage("call")
    [(call_id, name, args)] = first["calls"]
    messages += [{"role": "assistant", "content": first["text"] or None,
                  "tool_calls": [{"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": json.dumps(args)}}]},
                 {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}]
    final = lite.ask(messages, stream, tools=[WEATHER_TOOL])
    assert final["calls"] == [] and final["finish"] == "stop"
    assert lite_numbers(final["usage"]) == lite_usage("call_answer")
    check_tool_round_trip(lite.route, lite.model, [(name, args)], final["text"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_litellm_rate_limit_is_litellms_rate_limit_error(lite, stream):
    with pytest.raises(litellm.RateLimitError) as info:
        lite.ask([{"role": "user", "content": "[[error_first:429]] hi"}], stream)
    assert info.value.status_code == 429
    assert len(lite.route.calls(lite.model)) == 1, "the library retried"
