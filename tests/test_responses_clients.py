"""Real Python clients of the OpenAI Responses API -- the openai Agents SDK, LangChain's
``ChatOpenAI(use_responses_api=True)`` and ``litellm.responses`` -- against a real gunicorn's
``POST /v1/responses`` and the fake upstream.

Each test drives a library the way its users do, pointed at the gateway's ``/v1``, on the CLI
route (``gateway``: ``/alpha/generate``) and on the Provider API (``provider_gateway``: DeepSeek
on ``/provider/v1/chat/completions``, ``claude-sonnet-5`` on ``/provider/v1/messages`` -- the
``provider-claude`` cases).  What the library shows -- text, reasoning, tool name and arguments,
usage numbers, error class -- is checked against what the fake upstream played (``USAGE``) and
what it received (the model, the tool, the tool's result, the conversation history), never
merely that nothing raised.  Where a library continues a conversation (``previous_response_id``,
or the history sent back), the test checks that the earlier turns reached upstream.  The Agents
SDK and LangChain tests also record what the client itself sent to the gateway (an httpx event
hook on the openai client), to show it used ``/v1/responses`` the way it does with OpenAI.

* Agents SDK (``openai-agents``, pinned in ``requirements-dev.txt``): an ``Agent`` on
  ``OpenAIResponsesModel`` (its default model class) over an ``AsyncOpenAI`` pointed at the
  gateway; ``Runner.run`` and ``Runner.run_streamed`` with a ``@function_tool`` the model calls
  (``[[call:get_weather=...]]``), reasoning items, ``previous_response_id`` and the client-side
  ``to_input_list()`` history, the global ``set_default_openai_client`` set-up, a 429.
  Tracing is disabled (``set_tracing_disabled``): it would upload traces to OpenAI.  A model
  id with a slash must be written ``openai/<id>`` on that global path: the SDK's
  ``MultiProvider`` reads the part before the first ``/`` as a provider prefix (``deepseek/``
  -> ``UserError: Unknown prefix``) and strips ``openai/``.
* LangChain: invoke, stream, reasoning blocks, ``bind_tools`` + ``ToolMessage`` (whole and
  streamed), ``use_previous_response_id``, a 429.
* LiteLLM (``litellm.responses(model="openai/<id>", api_base=...)``): text and usage streamed
  and not, a tool round trip with ``function_call_output`` in ``input``, ``previous_response_id``
  (LiteLLM wraps the gateway's id in its own encoded one and unwraps it on the way out), a 429.

No internet: the ``no_internet`` guard of ``tests/test_python_clients.py`` (refuses and records
every non-loopback connect / DNS look-up) wraps the imports and every test; see that module for
LiteLLM's cost map and LangSmith.  Run only these: ``.venv/bin/python -m pytest -q
tests/test_responses_clients.py``.
"""
from __future__ import annotations

import asyncio
import functools
import json
import operator
import os

import pytest
import requests

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"       # before anything imports LiteLLM
os.environ["LANGSMITH_TRACING"] = os.environ["LANGCHAIN_TRACING_V2"] = "false"

from tests.conftest import LOCAL_KEY
from tests.fake_upstream import CALL_ANSWER_PREFIX, USAGE
from tests.test_python_clients import (CHAT, CLAUDE, FLASH, GENERATE, MESSAGES, TOOL_ARGS,
                                       TOOL_QUESTION, TOOL_RESULT, WEATHER_SCHEMA, Route,
                                       check_tool_round_trip, no_internet)
# the same autouse guard: every test here fails on any non-loopback connect / DNS look-up
from tests.test_python_clients import offline  # noqa: F401

with no_internet() as _import_guard:
    import agents
    import litellm
    import openai
    from openai.types.shared import Reasoning
    from agents import (Agent, ItemHelpers, ModelSettings, OpenAIResponsesModel, Runner,
                        function_tool, set_tracing_disabled)
    from agents.items import (MessageOutputItem, ReasoningItem, ToolCallItem,
                              ToolCallOutputItem)
    from agents.models import _openai_shared
    from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from litellm.llms.custom_httpx.http_handler import HTTPHandler
IMPORT_ATTEMPTS = list(_import_guard.attempts)
set_tracing_disabled(True)
litellm.suppress_debug_info = True

pytestmark = [pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"),   # LiteLLM's TypedDicts
              pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning"),
              # LiteLLM's own logging re-serialises the streamed usage with chat-style keys
              pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")]

INSTRUCTIONS = "You answer questions about the weather."
FLAT_WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                     "parameters": WEATHER_SCHEMA}
ECHO_QUESTION = "[[echo]] and again"
ECHO_ANSWER = "and again"           # the echo scenario answers the last user text, marker removed


def test_the_imports_reached_no_internet():
    assert IMPORT_ATTEMPTS == []
    assert litellm.model_cost, "LiteLLM's bundled model-cost map is loaded"


# ---- routes, what reached upstream, what the client sent -----------------------------------------

TARGETS = {                      # id -> (gateway fixture, model)
    "cli": ("gateway", FLASH),
    "provider": ("provider_gateway", FLASH),
    "provider-claude": ("provider_gateway", CLAUDE),    # Responses surface, Messages upstream
}


class Target:
    """One route x model: the gateway's ``/v1`` URL and what upstream received."""

    def __init__(self, name, server, fake, model):
        self.name, self.model = name, model
        self.url = server.url + "/v1"
        self.route = Route("cli" if name == "cli" else "provider", server, fake)

    def calls(self) -> list[dict]:
        """The model calls upstream received, each on this route's path and for this model."""
        calls = self.route.calls(self.model)
        for request in calls:
            assert self.route.sent_model(request) == self.model
        return calls

    def usage(self, *scenarios: str) -> dict:
        """The Responses usage object's numbers for ``scenarios`` (summed): ``input_tokens``
        includes the cache.  The Anthropic Messages API has no reasoning-token count."""
        u = {k: sum(USAGE[s][k] for s in scenarios) for k in USAGE[scenarios[0]]}
        return {"input_tokens": u["input"], "cached_tokens": u["cache_read"], "output_tokens": u["output"],
                "reasoning_tokens": 0 if self.route.path_for(self.model) == MESSAGES else u["reasoning"],
                "total_tokens": u["input"] + u["output"]}

    def history(self, request) -> list[tuple[str, str]]:
        """The user / assistant turns of an upstream request, as (role, text of its text parts)."""
        path = self.route.path_for(self.model)
        body = request["body"]
        messages = body["params"]["messages"] if path == GENERATE else body["messages"]
        out = []
        for m in messages:
            if m["role"] not in ("user", "assistant"):
                continue
            content = m.get("content")
            if isinstance(content, str):
                text = content
            else:
                text = "".join(p.get("text", "") for p in content or () if p.get("type") == "text")
            out.append((m["role"], text))
        return out

    def reasoning(self, request) -> list[str]:
        """The reasoning the assistant turns of an upstream request carry back to the model
        (CLI ``reasoning`` parts, chat ``reasoning_content``, messages ``thinking`` blocks, which
        Anthropic refuses without their signature)."""
        path = self.route.path_for(self.model)
        body = request["body"]
        out = []
        for m in body["params"]["messages"] if path == GENERATE else body["messages"]:
            if m["role"] != "assistant":
                continue
            if path == CHAT:
                out += [m["reasoning_content"]] if m.get("reasoning_content") else []
                continue
            for p in m["content"] if isinstance(m["content"], list) else ():
                if path == GENERATE and p["type"] == "reasoning":
                    out.append(p["text"])
                elif path == MESSAGES and p["type"] == "thinking":
                    assert p.get("signature"), f"a thinking block without its signature: {p}"
                    out.append(p["thinking"])
        return out

    def system(self, request) -> str:
        path = self.route.path_for(self.model)
        body = request["body"]
        if path == GENERATE:
            return body["params"]["system"]
        if path == CHAT:
            return "\n".join(m["content"] if isinstance(m["content"], str) else
                             "".join(p.get("text", "") for p in m["content"])
                             for m in body["messages"] if m["role"] in ("system", "developer"))
        system = body.get("system") or ""
        return system if isinstance(system, str) else "".join(b.get("text", "") for b in system)

    def get(self, response_id: str) -> requests.Response:
        """``GET /v1/responses/{id}``: a stored response, as the gateway serves it back."""
        return requests.get(f"{self.url}/responses/{response_id}", timeout=10,
                            headers={"Authorization": f"Bearer {LOCAL_KEY}"})


@pytest.fixture(params=list(TARGETS))
def target(request, fake):
    fixture, model = TARGETS[request.param]
    return Target(request.param, request.getfixturevalue(fixture), fake, model)


class Sent:
    """What the client sent to the gateway: (method, path, JSON body), from an httpx event hook
    on the openai client (sync for LangChain, async for the Agents SDK)."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict | None]] = []
        self._clients: list = []

    def http_client(self):
        """An httpx client (the openai SDK's default kind) recording every request; closed by
        the ``sent`` fixture, so no idle keep-alive connection outlives the test."""
        client = openai.DefaultHttpxClient(event_hooks={"request": [self.hook]})
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def hook(self, request) -> None:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))

    async def async_hook(self, request) -> None:
        self.hook(request)

    def bodies(self) -> list[dict]:
        assert [(m, p) for m, p, _ in self.requests] == [("POST", "/v1/responses")] * len(self.requests)
        return [b for _, _, b in self.requests]


@pytest.fixture
def sent():
    recorder = Sent()
    yield recorder
    recorder.close()


def responses_numbers(usage) -> dict:
    """A Responses usage object (the openai SDK's, the Agents SDK's, LiteLLM's) as ``Target.usage``."""
    assert usage is not None, "no usage"
    return {"input_tokens": usage.input_tokens, "cached_tokens": usage.input_tokens_details.cached_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.output_tokens_details.reasoning_tokens,
            "total_tokens": usage.total_tokens}


def check_continued(t: Target, first_prompt: str, first_answer: str, answer: str):
    """Two upstream calls; the second carried the first turn (question and answer) before the new one."""
    assert answer == ECHO_ANSWER
    first, second = t.calls()
    assert t.history(first) == [("user", first_prompt)]
    assert t.history(second) == [("user", first_prompt), ("assistant", first_answer),
                                 ("user", ECHO_QUESTION)]


# ---- openai Agents SDK -------------------------------------------------------------------------

class AgentsRun:
    """An ``Agent`` on ``OpenAIResponsesModel`` (the SDK's default model class) over an
    ``AsyncOpenAI`` pointed at the gateway, recording what it sends.  Use it as ``async with``
    inside the test's event loop: the client's connections are closed when the block ends."""

    def __init__(self, t: Target, tools=(), **agent_kw):
        self.sent = Sent()
        self.client = openai.AsyncOpenAI(
            base_url=t.url, api_key=LOCAL_KEY, max_retries=0, timeout=30,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [self.sent.async_hook]}))
        self.agent = Agent(name="weather", instructions=INSTRUCTIONS, tools=list(tools),
                           model=OpenAIResponsesModel(model=t.model, openai_client=self.client), **agent_kw)

    async def __aenter__(self) -> "AgentsRun":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()


def in_event_loop(test):
    """Run an ``async def test_...`` (the Agents SDK is asyncio) in a fresh event loop."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


def weather_tool(ran: list):
    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city.

        Args:
            city: City name
        """
        ran.append({"city": city})
        return TOOL_RESULT
    return get_weather


async def agents_run(agent, prompt, stream: bool, **kw):
    """``Runner.run``, or (``stream``) ``Runner.run_streamed`` consumed as an app does: the result,
    its text deltas and its run item events (both None when not streamed)."""
    if not stream:
        return await Runner.run(agent, prompt, **kw), None, None
    result = Runner.run_streamed(agent, prompt, **kw)
    deltas, items = [], []
    async for ev in result.stream_events():
        if ev.type == "raw_response_event" and ev.data.type == "response.output_text.delta":
            deltas.append(ev.data.delta)
        elif ev.type == "run_item_stream_event":
            items.append((ev.name, ev.item))
    return result, deltas, items


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
@in_event_loop
async def test_agents_text_and_usage(target, stream):
    async with AgentsRun(target) as a:
        result, deltas, items = await agents_run(a.agent, "Say hello", stream)
        if stream:
            assert len(deltas) >= 2 and "".join(deltas) == "Hello world", deltas
            assert [name for name, _ in items] == ["message_output_created"]
    assert result.final_output == "Hello world"
    [message] = result.new_items
    assert isinstance(message, MessageOutputItem) and ItemHelpers.text_message_output(message) == "Hello world"
    assert responses_numbers(result.context_wrapper.usage) == target.usage("text")
    assert result.context_wrapper.usage.requests == 1
    [response] = result.raw_responses
    assert response.response_id.startswith("resp_") and result.last_response_id == response.response_id
    [body] = a.sent.bodies()
    assert (body["model"], body["input"], body["instructions"]) == \
        (target.model, [{"role": "user", "content": "Say hello"}], INSTRUCTIONS)
    assert body.get("stream", False) is stream
    [call] = target.calls()
    assert INSTRUCTIONS in target.system(call)
    assert target.history(call) == [("user", "Say hello")]


@pytest.mark.parametrize("chain", ["resend", "auto_previous_response_id"])
@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
@in_event_loop
async def test_agents_function_tool_round_trip(target, stream, chain):
    """The model calls the ``@function_tool``; the SDK runs it and sends the result back; the
    second answer is the run's ``final_output``.  ``resend``: the second request carries the
    whole conversation; ``auto_previous_response_id``: only the tool's output, chained to the
    first response, which the gateway stored before its ``response.completed``."""
    ran = []
    kw = {"auto_previous_response_id": True} if chain == "auto_previous_response_id" else {}
    async with AgentsRun(target, [weather_tool(ran)]) as a:
        result, deltas, events = await agents_run(a.agent, TOOL_QUESTION, stream, **kw)
        if stream:
            assert [name for name, _ in events] == ["tool_called", "tool_output", "message_output_created"]
            assert "".join(deltas) == CALL_ANSWER_PREFIX + TOOL_RESULT
    assert ran == [TOOL_ARGS], "the tool did not run once with the model's arguments"
    call_item, output_item, message = result.new_items
    assert isinstance(call_item, ToolCallItem) and isinstance(output_item, ToolCallOutputItem)
    assert isinstance(message, MessageOutputItem)
    shown_call = call_item.raw_item
    assert output_item.output == TOOL_RESULT
    assert result.final_output == CALL_ANSWER_PREFIX + TOOL_RESULT
    assert [responses_numbers(r.usage) for r in result.raw_responses] == \
        [target.usage("call"), target.usage("call_answer")]
    assert responses_numbers(result.context_wrapper.usage) == target.usage("call", "call_answer")
    assert result.context_wrapper.usage.requests == 2
    # what the SDK sent the gateway: the tool both times, the call's output the second time
    first, second = a.sent.bodies()
    for body in (first, second):
        assert [t["name"] for t in body["tools"]] == ["get_weather"]
    kinds = [i.get("type", "message") for i in second["input"]]
    if chain == "resend":
        assert "previous_response_id" not in second
        assert kinds == ["message", "function_call", "function_call_output"], second["input"]
        assert second["input"][1]["call_id"] == shown_call.call_id
    else:
        assert second["previous_response_id"] == result.raw_responses[0].response_id
        assert kinds == ["function_call_output"], second["input"]
    assert (second["input"][-1]["call_id"], second["input"][-1]["output"]) == (shown_call.call_id, TOOL_RESULT)
    check_tool_round_trip(target.route, target.model, [(shown_call.name, json.loads(shown_call.arguments))],
                          result.final_output)


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
@in_event_loop
async def test_agents_reasoning_item(target, stream):
    async with AgentsRun(target) as a:
        result, _, _ = await agents_run(a.agent, "[[reasoning]] 2+2?", stream)
    reasoning, message = result.new_items
    assert isinstance(reasoning, ReasoningItem) and isinstance(message, MessageOutputItem)
    assert [s.text for s in reasoning.raw_item.summary] == ["Let me think."]
    assert result.final_output == "4"
    assert responses_numbers(result.context_wrapper.usage) == target.usage("reasoning")
    target.calls()


@pytest.mark.parametrize("how", ["previous_response_id", "to_input_list"])
@in_event_loop
async def test_agents_second_turn(target, how):
    """A conversation's second turn, kept by the gateway (``previous_response_id``: the SDK sends
    only the new message) or by the client (``to_input_list()``: the whole history, with the
    first answer as an output ``message`` item)."""
    async with AgentsRun(target) as a:
        first = await Runner.run(a.agent, "Say hello")
        if how == "previous_response_id":
            second = await Runner.run(a.agent, ECHO_QUESTION, previous_response_id=first.last_response_id)
        else:
            second = await Runner.run(a.agent, first.to_input_list() + [{"role": "user", "content": ECHO_QUESTION}])
    _, sent = a.sent.bodies()
    if how == "previous_response_id":
        assert sent["previous_response_id"] == first.last_response_id
        assert sent["input"] == [{"role": "user", "content": ECHO_QUESTION}]
    else:
        assert "previous_response_id" not in sent
        assert [i.get("type", "message") for i in sent["input"]] == ["message"] * 3
    assert first.final_output == "Hello world"
    assert responses_numbers(second.context_wrapper.usage) == target.usage("echo")
    check_continued(target, "Say hello", "Hello world", second.final_output)


@in_event_loop
async def test_agents_stateless_reasoning_round_trip(target):
    """The stateless set-up (``store=False``, ``include`` the encrypted reasoning): the SDK keeps
    the reasoning item, ``encrypted_content`` included, and sends it back with the next turn;
    the model gets its own reasoning (and, for Claude, the signature) back in that turn, and
    nothing was stored."""
    settings = ModelSettings(store=False, response_include=["reasoning.encrypted_content"],
                             reasoning=Reasoning(effort="high", summary="auto"))
    async with AgentsRun(target, model_settings=settings) as a:
        first = await Runner.run(a.agent, "[[reasoning]] 2+2?")
        history = first.to_input_list()
        second = await Runner.run(a.agent, history + [{"role": "user", "content": ECHO_QUESTION}])
    sent_first, sent_second = a.sent.bodies()
    assert (sent_first["store"], sent_first["include"]) == (False, ["reasoning.encrypted_content"])
    assert sent_first["reasoning"] == {"effort": "high", "summary": "auto"}
    assert [i.get("type", "message") for i in history] == ["message", "reasoning", "message"]
    shown = history[1]
    assert [p["text"] for p in shown["summary"]] == ["Let me think."] and shown["encrypted_content"]
    assert sent_second["input"][1] == shown, "the SDK sends the reasoning item back as it got it"
    assert (first.final_output, second.final_output) == ("4", ECHO_ANSWER)
    one, two = target.calls()
    path = target.route.path_for(target.model)
    if path == MESSAGES:                    # the effort as a thinking budget
        assert one["body"]["thinking"]["type"] == "enabled"
    else:
        assert (one["body"]["params"] if path == GENERATE else one["body"])["reasoning_effort"] == "high"
    assert target.reasoning(one) == [] and target.reasoning(two) == ["Let me think."]
    assert target.history(two) == [("user", "[[reasoning]] 2+2?"), ("assistant", "4"), ("user", ECHO_QUESTION)]
    assert target.get(first.last_response_id).status_code == 404, "store: false, yet the response was stored"


@in_event_loop
async def test_agents_default_client_is_the_responses_api(target):
    """The set-up the SDK documents for other providers: ``set_default_openai_client`` +
    ``set_default_openai_api("responses")`` and a model *name* (``openai/<id>``, see the module
    docstring); the answer is a stored response the gateway serves back by id."""
    saved = (_openai_shared.get_default_openai_client(), _openai_shared.get_use_responses_by_default())
    sent = Sent()
    client = openai.AsyncOpenAI(base_url=target.url, api_key=LOCAL_KEY, max_retries=0, timeout=30,
                                http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [sent.async_hook]}))
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    try:
        agent = Agent(name="weather", instructions=INSTRUCTIONS, model=f"openai/{target.model}")
        result = await Runner.run(agent, "Say hello")
    finally:
        _openai_shared.set_default_openai_client(saved[0])
        _openai_shared.set_use_responses_by_default(saved[1])
        await client.close()
    assert result.final_output == "Hello world"
    [body] = sent.bodies()
    assert body["model"] == target.model, "the SDK strips its openai/ prefix"
    r = target.get(result.last_response_id)
    assert r.status_code == 200, r.text
    stored = r.json()
    assert (stored["id"], stored["status"], stored["model"]) == (result.last_response_id, "completed", target.model)
    assert [c["text"] for i in stored["output"] for c in i["content"]] == ["Hello world"]
    target.calls()


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
@in_event_loop
async def test_agents_rate_limit_is_openai_rate_limit_error(target, stream):
    async with AgentsRun(target) as a:
        with pytest.raises(openai.RateLimitError) as info:
            await agents_run(a.agent, "[[error_first:429]] hi", stream)
    assert info.value.status_code == 429
    assert "slow down" in info.value.message
    assert len(target.calls()) == 1, "the SDK retried"


# ---- LangChain ChatOpenAI(use_responses_api=True) ----------------------------------------------

def lc_model(t: Target, sent: Sent, **kw):
    return ChatOpenAI(model=t.model, base_url=t.url, api_key=LOCAL_KEY, use_responses_api=True,
                      max_retries=0, timeout=30, http_client=sent.http_client(), **kw)


def lc_usage(t: Target, scenario: str) -> dict:
    """LangChain's ``usage_metadata`` for a scenario, in ``Target.usage`` terms."""
    u = t.usage(scenario)
    return {"input_tokens": u["input_tokens"], "output_tokens": u["output_tokens"],
            "total_tokens": u["total_tokens"],
            "input_token_details": {"cache_read": u["cached_tokens"], "cache_creation": USAGE[scenario]["cache_write"]},
            "output_token_details": {"reasoning": u["reasoning_tokens"]}}


def test_langchain_invoke(target, sent):
    msg = lc_model(target, sent).invoke("Say hello")
    assert msg.text == "Hello world"
    assert msg.usage_metadata == lc_usage(target, "text")
    assert msg.response_metadata["id"].startswith("resp_") and msg.response_metadata["status"] == "completed"
    assert msg.response_metadata["model_name"] == target.model
    [body] = sent.bodies()
    assert body["model"] == target.model
    [call] = target.calls()
    assert target.history(call) == [("user", "Say hello")]


def test_langchain_stream(target, sent):
    chunks = list(lc_model(target, sent).stream("Say hello"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert [c.text for c in chunks if c.text] == ["Hello", " world"], "not streamed as the deltas came"
    full = functools.reduce(operator.add, chunks)
    assert full.text == "Hello world"
    assert full.usage_metadata == lc_usage(target, "text")
    [body] = sent.bodies()
    assert body["stream"] is True
    target.calls()


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_reasoning_block(target, sent, stream):
    llm = lc_model(target, sent)
    msg = functools.reduce(operator.add, llm.stream("[[reasoning]] 2+2?")) if stream else llm.invoke("[[reasoning]] 2+2?")
    assert msg.text == "4"
    assert [b["reasoning"] for b in msg.content_blocks if b["type"] == "reasoning"] == ["Let me think."]
    assert msg.usage_metadata == lc_usage(target, "reasoning")
    target.calls()


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_tool_round_trip(target, sent, stream):
    @tool
    def get_weather(city: str) -> str:
        """Weather for a city"""
        return TOOL_RESULT

    llm = lc_model(target, sent).bind_tools([get_weather])
    history = [HumanMessage(TOOL_QUESTION)]
    ai = functools.reduce(operator.add, llm.stream(history)) if stream else llm.invoke(history)
    assert ai.usage_metadata == lc_usage(target, "call")
    calls = [(c["name"], c["args"]) for c in ai.tool_calls]
    history += [ai] + [ToolMessage(get_weather.invoke(c["args"]), tool_call_id=c["id"]) for c in ai.tool_calls]
    final = functools.reduce(operator.add, llm.stream(history)) if stream else llm.invoke(history)
    assert final.tool_calls == []
    assert final.usage_metadata == lc_usage(target, "call_answer")
    _, second = sent.bodies()
    assert [i.get("type", "message") for i in second["input"]] == ["message", "function_call", "function_call_output"]
    assert second["input"][2]["output"] == TOOL_RESULT
    check_tool_round_trip(target.route, target.model, calls, final.text)


def test_langchain_use_previous_response_id(target, sent):
    """``use_previous_response_id=True``: the second call sends only the new message and the
    first response's id; the gateway puts the stored turn back in front of it."""
    llm = lc_model(target, sent, use_previous_response_id=True)
    history = [HumanMessage("Say hello")]
    first = llm.invoke(history)
    second = llm.invoke(history + [first, HumanMessage(ECHO_QUESTION)])
    _, body = sent.bodies()
    assert body["previous_response_id"] == first.response_metadata["id"]
    assert [i["content"] for i in body["input"]] == [ECHO_QUESTION]
    assert second.usage_metadata == lc_usage(target, "echo")
    check_continued(target, "Say hello", first.text, second.text)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_rate_limit_is_the_sdk_rate_limit_error(target, sent, stream):
    llm = lc_model(target, sent)
    with pytest.raises(openai.RateLimitError) as info:
        if stream:
            list(llm.stream("[[error_first:429]] hi"))
        else:
            llm.invoke("[[error_first:429]] hi")
    assert info.value.status_code == 429 and "slow down" in info.value.message
    assert len(target.calls()) == 1, "the library retried"


# ---- LiteLLM litellm.responses -----------------------------------------------------------------

class Lite:
    """``litellm.responses`` for one target, over an HTTP client of the test's own (closed after
    it, so no idle keep-alive connection outlives the test; LiteLLM's cached one would)."""

    def __init__(self, t: Target):
        self.t = t
        self.http = HTTPHandler(timeout=30)

    def responses(self, **kw):
        return litellm.responses(model=f"openai/{self.t.model}", api_base=self.t.url, api_key=LOCAL_KEY,
                                 max_retries=0, num_retries=0, timeout=30, client=self.http, **kw)

    def ask(self, stream: bool, **kw) -> dict:
        """The response object (from ``response.completed`` when streamed) and the text deltas."""
        if not stream:
            return {"response": self.responses(**kw), "deltas": None}
        events = list(self.responses(stream=True, **kw))
        kinds = [_kind(e) for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
        return {"response": events[-1].response, "kinds": kinds,
                "deltas": [e.delta for e in events if _kind(e) == "response.output_text.delta"]}


@pytest.fixture
def lite(target):
    client = Lite(target)
    yield client
    client.http.close()


def _kind(event) -> str:
    return getattr(event.type, "value", event.type)


def lite_text(response) -> str:
    return "".join(c.text for item in response.output if item.type == "message" for c in item.content)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_litellm_responses_text_and_usage(target, lite, stream):
    r = lite.ask(stream, input="Say hello")
    response = r["response"]
    assert lite_text(response) == "Hello world" and response.status == "completed"
    assert responses_numbers(response.usage) == target.usage("text")
    if stream:
        assert len(r["deltas"]) >= 2 and "".join(r["deltas"]) == "Hello world", r["deltas"]
    [call] = target.calls()
    assert target.history(call) == [("user", "Say hello")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_litellm_responses_tool_round_trip(target, lite, stream):
    """The function call comes back as an output item; it and a ``function_call_output`` go back
    in the next ``input``, as the Responses API documents."""
    question = [{"role": "user", "content": TOOL_QUESTION}]
    first = lite.ask(stream, input=question, tools=[FLAT_WEATHER_TOOL])["response"]
    [fc] = first.output
    assert (fc.type, fc.name, json.loads(fc.arguments)) == ("function_call", "get_weather", TOOL_ARGS)
    assert responses_numbers(first.usage) == target.usage("call")
    followup = question + list(first.output) + [
        {"type": "function_call_output", "call_id": fc.call_id, "output": TOOL_RESULT}]
    final = lite.ask(stream, input=followup, tools=[FLAT_WEATHER_TOOL])["response"]
    assert [i.type for i in final.output] == ["message"]
    assert responses_numbers(final.usage) == target.usage("call_answer")
    check_tool_round_trip(target.route, target.model, [(fc.name, json.loads(fc.arguments))], lite_text(final))


def test_litellm_responses_previous_response_id(target, lite):
    first = lite.responses(input="Say hello")
    assert first.id.startswith("resp_")
    second = lite.responses(input=ECHO_QUESTION, previous_response_id=first.id)
    assert responses_numbers(second.usage) == target.usage("echo")
    check_continued(target, "Say hello", lite_text(first), lite_text(second))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_litellm_responses_rate_limit_is_litellms_rate_limit_error(target, lite, stream):
    with pytest.raises(litellm.RateLimitError) as info:
        lite.ask(stream, input="[[error_first:429]] hi")
    assert info.value.status_code == 429 and "slow down" in str(info.value)
    assert len(target.calls()) == 1, "the library retried"
