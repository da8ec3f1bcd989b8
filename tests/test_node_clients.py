"""Real Node clients -> real gunicorn -> the fake upstream, one pytest item per client x route x case.

Why: most callers of the gateway are not the Python SDKs.  The Vercel AI SDK (``ai`` with its
``@ai-sdk/openai-compatible``, ``@ai-sdk/anthropic`` and ``@ai-sdk/openai`` providers), the
``openai`` Node SDK and ``@anthropic-ai/sdk`` each parse streams, usage, tool calls and errors
with their own code and schemas; these tests run those exact packages (pinned in
``tests/clients/package.json``, installed by ``npm ci --prefix tests/clients``) against the
gateway the way users run it.

How: ``tests/clients/{ai_sdk,openai_node,anthropic_node}.mjs`` run every case of one client
against one gateway URL in one node process; ``tests/node_harness.py`` runs them (the module
fixture ``runs``) and splits the fake upstream's record per case.  Each item then asserts one
case: what the client showed (text, reasoning, tool call and its parsed input, usage derived
from ``USAGE``, error class and status) and what reached upstream (the route's path, the model,
the tool and the tool's result).  The AI SDK's Responses model (``openai(id)``) is one more
client of the same harness, in ``tests/test_node_responses_clients.py``.

Routes: ``cli`` (``gateway``, the CLI route), ``provider`` (``provider_gateway``; OpenAI-surface
clients ask a non-Claude model -> Provider chat, Anthropic-surface clients a Claude model ->
Provider messages) and ``provider-cross`` (the other way round: any model works from any
surface).
"""
from __future__ import annotations

import pytest

from tests.fake_upstream import USAGE
from tests.node_harness import (TOOL_ANSWER, TOOL_INPUT, Case, Client, ai_error, ai_tool_round_trip,
                                items, language_model_usage, runs_fixture)

# The first item runs every node process (in its module fixture), ~10-20 s on 2 cores; give it
# more than pytest.ini's 60 s so a slow machine reports the case that hung, not a timeout.
pytestmark = pytest.mark.timeout(240)

#: AI SDK providers that surface the model's reasoning text (@ai-sdk/openai's chat model does
#: not read ``reasoning_content``: it is an OpenAI-compatible extension) ...
AI_EXPOSES_REASONING = {"ai-openai-compatible", "ai-anthropic"}
#: ... and that report reasoning tokens (the Anthropic API has no such number).
AI_REPORTS_REASONING_TOKENS = {"ai-openai-compatible", "ai-openai-chat"}


# ---- expected usage, in each client's terms ----------------------------------------------------

def ai_usage(c: Case, *scenarios: str) -> dict:
    """The AI SDK's LanguageModelUsage (inputTokens includes cache reads and writes)."""
    return language_model_usage(c.usage(*scenarios), c.client in AI_REPORTS_REASONING_TOKENS)


def ai_usage_of(shown: dict) -> dict:
    """What the client showed, minus cacheWriteTokens (checked apart: not every provider reads it)."""
    return {k: v for k, v in shown.items() if k != "cacheWriteTokens"}


def openai_usage(u: dict) -> dict:
    return {"prompt_tokens": u["input"], "completion_tokens": u["output"],
            "total_tokens": u["input"] + u["output"], "cached_tokens": u["cache_read"],
            "reasoning_tokens": u["reasoning"]}


def anthropic_usage(u: dict) -> dict:
    """Anthropic's meaning: ``input_tokens`` is the uncached part only."""
    return {"input_tokens": u["input"] - u["cache_read"] - u["cache_write"],
            "output_tokens": u["output"], "cache_read_input_tokens": u["cache_read"],
            "cache_creation_input_tokens": u["cache_write"]}


# ---- AI SDK cases (the same for its three providers) -------------------------------------------

def _ai_text(c: Case, streamed: bool):
    r = c.result
    assert r["text"] == "Hello world", c.why("text")
    assert r["finishReason"] == "stop", c.why("finishReason")
    assert ai_usage_of(r["usage"]) == ai_usage(c, "text"), c.why("usage")
    assert r["usage"]["cacheWriteTokens"] in (None, USAGE["text"]["cache_write"]), c.why("cacheWriteTokens")
    if streamed:
        assert r["errors"] == [] and r["streamed"] == "Hello world", c.why("the stream itself")
    c.check_upstream(1)


def _ai_tools(c: Case, streamed: bool):
    call_step, answer_step = ai_tool_round_trip(c, streamed)
    assert ai_usage_of(call_step["usage"]) == ai_usage(c, "call"), c.why("tool step usage")
    assert ai_usage_of(answer_step["usage"]) == ai_usage(c, "call_answer"), c.why("answer step usage")
    assert ai_usage_of(c.result["usage"]) == ai_usage(c, "call", "call_answer"), \
        c.why("total usage of the two steps")


def _ai_reasoning(c: Case):
    r = c.result
    assert r["text"] == "4", c.why("text")
    if c.client in AI_EXPOSES_REASONING:
        assert r["reasoningText"] == "Let me think.", c.why("reasoningText")
    assert ai_usage_of(r["usage"]) == ai_usage(c, "reasoning"), c.why("usage")
    if "errors" in r:
        assert r["errors"] == [], c.why("stream errors")
    c.check_upstream(1)


AI_CASES = {
    "generate_text": lambda c: _ai_text(c, streamed=False),
    "stream_text": lambda c: _ai_text(c, streamed=True),
    "generate_tool_round_trip": lambda c: _ai_tools(c, streamed=False),
    "stream_tool_round_trip": lambda c: _ai_tools(c, streamed=True),
    "generate_reasoning": _ai_reasoning,
    "stream_reasoning": _ai_reasoning,
    "generate_error_429": lambda c: ai_error(c, streamed=False),
    "stream_error_429": lambda c: ai_error(c, streamed=True),
}


# ---- openai (Node) cases -----------------------------------------------------------------------

def _oa_text(c: Case):
    r = c.result
    assert (r["text"], r["finishReason"]) == ("Hello world", "stop"), c.why("text and finish_reason")
    assert r["usage"] == openai_usage(c.usage("text")), c.why("usage")
    if "contentDeltas" in r:
        assert r["contentDeltas"] == "Hello world", c.why("the helper's content.delta events")
    c.check_upstream(1)


def _oa_tools(c: Case):
    first, second = c.result["first"], c.result["second"]
    assert [(t["name"], t["input"]) for t in first["toolCalls"]] == [("read_file", TOOL_INPUT)], \
        c.why("tool call (name, parsed arguments)")
    assert first["toolCalls"][0]["id"] and first["toolCalls"][0]["type"] == "function", \
        c.why("tool call id and type")
    assert first["finishReason"] == "tool_calls", c.why("first finish_reason")
    assert first["usage"] == openai_usage(c.usage("call")), c.why("first usage")
    assert (second["text"], second["finishReason"]) == (TOOL_ANSWER, "stop"), c.why("answer after the tool")
    assert second["toolCalls"] == [], c.why("no second tool call")
    assert second["usage"] == openai_usage(c.usage("call_answer")), c.why("second usage")
    c.check_upstream(2, tools=True)
    c.check_tool_result_upstream()


def _oa_reasoning(c: Case):
    r = c.result
    assert (r["reasoning"], r["text"]) == ("Let me think.", "4"), c.why("reasoning_content and content")
    assert r["usage"] == openai_usage(c.usage("reasoning")), c.why("usage")
    c.check_upstream(1)


def _sdk_429(c: Case) -> dict:
    """Both Node SDKs: a 429 before any output is their RateLimitError, the message kept."""
    r = c.result
    assert not r.get("unexpectedSuccess"), c.why("a 429 before any output must be an error")
    err = r["thrown"]
    assert (err["class"], err["status"], r["isRateLimitError"]) == ("RateLimitError", 429, True), \
        c.why("error class and status")
    assert "slow down" in err["message"], c.why("the upstream's message is kept")
    c.check_upstream(1)
    return err


def _oa_error(c: Case):
    _sdk_429(c)


OPENAI_CASES = {
    "create_whole": _oa_text, "create_stream": _oa_text, "stream_helper": _oa_text,
    "tools_whole": _oa_tools, "tools_stream": _oa_tools, "stream_helper_tools": _oa_tools,
    "reasoning_whole": _oa_reasoning, "reasoning_stream": _oa_reasoning,
    "error_429_whole": _oa_error, "error_429_stream": _oa_error,
}


# ---- @anthropic-ai/sdk cases -------------------------------------------------------------------

def _an_events(c: Case, r: dict):
    if "events" in r:        # a raw stream: the SDK's event order
        ev = r["events"]
        assert ev[0] == "message_start" and ev[-2:] == ["message_delta", "message_stop"], c.why("event order")


def _an_text(c: Case):
    r = c.result
    assert (r["blocks"], r["text"], r["stopReason"]) == (["text"], "Hello world", "end_turn"), \
        c.why("message")
    assert r["usage"] == anthropic_usage(c.usage("text")), c.why("usage")
    if "textEvents" in r:
        assert r["textEvents"] == "Hello world", c.why("the helper's text events")
    _an_events(c, r)
    c.check_upstream(1)


def _an_tools(c: Case):
    first, second = c.result["first"], c.result["second"]
    assert [(t["name"], t["input"]) for t in first["toolCalls"]] == [("read_file", TOOL_INPUT)], \
        c.why("tool_use (name, parsed input)")
    assert first["blocks"] == ["tool_use"] and first["stopReason"] == "tool_use", c.why("first message")
    assert first["usage"] == anthropic_usage(c.usage("call")), c.why("first usage")
    assert (second["blocks"], second["text"], second["stopReason"]) == (["text"], TOOL_ANSWER, "end_turn"), \
        c.why("answer after the tool")
    assert second["usage"] == anthropic_usage(c.usage("call_answer")), c.why("second usage")
    _an_events(c, first)
    _an_events(c, second)
    c.check_upstream(2, tools=True)
    c.check_tool_result_upstream()


def _an_reasoning(c: Case):
    r = c.result
    assert (r["blocks"], r["thinking"], r["text"]) == (["thinking", "text"], "Let me think.", "4"), \
        c.why("thinking block then text")
    assert r["usage"] == anthropic_usage(c.usage("reasoning")), c.why("usage")
    if "thinkingEvents" in r:
        assert (r["thinkingEvents"], r["textEvents"]) == ("Let me think.", "4"), c.why("the helper's events")
    c.check_upstream(1)


def _an_error(c: Case):
    err = _sdk_429(c)
    assert err["body"]["type"] == "error" and err["body"]["error"]["type"] == "rate_limit_error", \
        c.why("Anthropic error envelope")


ANTHROPIC_CASES = {
    "create_whole": _an_text, "create_stream": _an_text, "stream_helper": _an_text,
    "tools_whole": _an_tools, "tools_stream": _an_tools, "stream_helper_tools": _an_tools,
    "reasoning_whole": _an_reasoning, "reasoning_stream_helper": _an_reasoning,
    "error_429_whole": _an_error, "error_429_stream": _an_error, "error_429_stream_helper": _an_error,
}


# ---- the items ---------------------------------------------------------------------------------

#: client -> Client(script and arguments, surface, case table)
CLIENTS = {
    "ai-openai-compatible": Client(["ai_sdk.mjs", "openai-compatible"], "openai", AI_CASES),
    "ai-anthropic": Client(["ai_sdk.mjs", "anthropic"], "anthropic", AI_CASES),
    "ai-openai-chat": Client(["ai_sdk.mjs", "openai-chat"], "openai", AI_CASES),
    "openai-node": Client(["openai_node.mjs"], "openai", OPENAI_CASES),
    "anthropic-node": Client(["anthropic_node.mjs"], "anthropic", ANTHROPIC_CASES),
}
runs = runs_fixture(CLIENTS)        # the module's fixture: every node process its items need, run once


@pytest.mark.parametrize("client,route,case", items(CLIENTS))
def test_node_client(runs, client, route, case):
    runs.check(client, route, case)


def test_every_upstream_request_belongs_to_a_case(runs):
    """Nothing the runs caused upstream is unaccounted for (nor any violation outside a case)."""
    runs.check_accounted_for()
