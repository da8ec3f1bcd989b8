"""The Vercel AI SDK's default OpenAI model -- the Responses API -- against a real gunicorn's
``POST /v1/responses`` and the fake upstream; one pytest item per route x case.

Why: ``createOpenAI({baseURL})(id)`` (``@ai-sdk/openai``, pinned in ``tests/clients/package.json``)
is an ``OpenAIResponsesLanguageModel``: any app that points the AI SDK's OpenAI provider at the
gateway without ``.chat(id)`` talks to ``/v1/responses``.  Its zod schemas want ids on every
output item, ``created_at``, ``item_id`` on each delta and the usage numbers; it maps
``response.completed`` / ``incomplete`` to finish reasons, reasoning summaries to reasoning parts,
and, with its default ``store: true``, sends earlier output items back as ``item_reference`` ids
(the server is expected to know them) rather than as whole items.

How: ``tests/clients/ai_sdk_responses.mjs`` runs every case against one gateway URL and model in
one node process, as one more client (``ai-openai-responses``) of ``tests/node_harness.py``, the
harness of ``tests/test_node_clients.py``: the module fixture ``runs`` starts the three
processes at once and splits the fake upstream's record of the same time window per case.  Each
item asserts what the SDK showed (text, reasoning, tool call and parsed input, the tool's result,
usage from ``USAGE``, error class and status) and what reached upstream (the route's path, the
model, the tool, the tool's result, the conversation's earlier turns).

Routes: ``cli`` (``gateway``), ``provider`` (``provider_gateway``, DeepSeek -> Provider chat)
and ``provider-cross`` (``provider_gateway``, ``claude-sonnet-5`` -> Provider messages).
Run only these: ``.venv/bin/python -m pytest -q tests/test_node_responses_clients.py``.
"""
from __future__ import annotations

import pytest

from tests.node_harness import (Case, Client, ai_error, ai_tool_round_trip, items, language_model_usage,
                                runs_fixture)

# The first item runs the node processes (in its module fixture); see test_node_clients.py.
pytestmark = pytest.mark.timeout(240)

SYSTEM = "You answer questions about the weather."     # the script's system prompt (text cases)


def usage(c: Case, *scenarios: str) -> dict:
    """The AI SDK's LanguageModelUsage for ``USAGE`` of ``scenarios`` (summed): inputTokens
    includes cache reads and writes; behind the Anthropic Messages API (no reasoning-token
    count) reasoningTokens is 0."""
    u = c.usage(*scenarios)
    return {**language_model_usage(u), "cacheWriteTokens": u["cache_write"]}


# ---- the cases ---------------------------------------------------------------------------------

def _text(c: Case, streamed: bool):
    r = c.result
    assert (r["text"], r["finishReason"]) == ("Hello world", "stop"), c.why("text and finishReason")
    assert r["usage"] == usage(c, "text"), c.why("usage")
    assert (r["responseId"] or "").startswith("resp_"), c.why("providerMetadata.openai.responseId")
    if streamed:
        assert r["errors"] == [] and r["streamed"] == "Hello world", c.why("the stream itself")
        assert r["types"] == ["start", "start-step", "text-start", "text-delta", "text-end",
                              "finish-step", "finish"], c.why("stream part types")
    c.check_upstream(1)
    assert SYSTEM in c.system(c.requests[0]), c.why(f"system upstream: {c.system(c.requests[0])!r}")
    assert c.history(c.requests[0]) == [("user", f"Say hello {c.tag()}")], c.why("the prompt upstream")


def _tools(c: Case, streamed: bool):
    call_step, answer_step = ai_tool_round_trip(c, streamed)
    assert call_step["responseId"] != answer_step["responseId"], c.why("one response per step")
    assert call_step["usage"] == usage(c, "call"), c.why("tool step usage")
    assert answer_step["usage"] == usage(c, "call_answer"), c.why("answer step usage")
    assert c.result["usage"] == usage(c, "call", "call_answer"), c.why("total usage of the two steps")
    assert c.result["sentInputs"] == [["message"], ["message", "function_call", "function_call_output"]], \
        c.why("what the SDK sent: the call and its output go back whole, not as item references")


def _reasoning(c: Case):
    r = c.result
    assert (r["reasoningText"], r["text"]) == ("Let me think.", "4"), c.why("reasoning summary and text")
    if "reasoningParts" in r:
        assert r["reasoningParts"] == ["Let me think."], c.why("one reasoning part")
    if "errors" in r:
        assert r["errors"] == [] and r["streamedReasoning"] == "Let me think.", c.why("reasoning deltas")
        assert r["types"].index("reasoning-start") < r["types"].index("text-start"), c.why("part order")
    assert r["usage"] == usage(c, "reasoning"), c.why("usage")
    c.check_upstream(1)


def _cache(c: Case):
    r = c.result
    assert (r["text"], r["finishReason"]) == ("cached", "stop"), c.why("text")
    assert r["usage"] == usage(c, "cache"), c.why("usage with cache writes")
    c.check_upstream(1)


def _second_turn(c: Case):
    """The second turn answers the new message, and upstream got the first turn before it."""
    r = c.result
    assert r["firstText"] == "Hello world", c.why("first answer")
    c.check_upstream(2)
    first_q = f"Say hello {c.tag()}"
    assert c.history(c.requests[0]) == [("user", first_q)], c.why("first upstream request")
    assert c.history(c.requests[1]) == [("user", first_q), ("assistant", "Hello world"),
                                        ("user", f"[[echo]] and again {c.tag()}")], \
        c.why(f"history upstream on the second turn: {c.history(c.requests[1])}")
    assert r["text"] == f"and again {c.tag()}", c.why("the echo of the second user message alone")
    assert r["usage"] == usage(c, "echo"), c.why("usage")


def _history_second_turn(c: Case):
    """The app sends the first turn back as history; the SDK (store: true by default) sends the
    first answer as ``{"type": "item_reference", "id": <its msg_ id>}``, which the gateway has
    stored, so upstream must get the first answer's text in its place."""
    r = c.result
    [sent] = r["sent"]
    [answer_id] = r["firstItemIds"]
    assert sent["path"] == "/v1/responses" and [i.get("type", "message") for i in sent["input"]] == \
        ["message", "item_reference", "message"], c.why("what the SDK sent on the second turn")
    assert sent["input"][1]["id"] == answer_id and answer_id.startswith("msg_"), c.why("the referenced item")
    _second_turn(c)


def _previous_response_id(c: Case):
    """``providerOptions.openai.previousResponseId``: the SDK sends only the new message."""
    r = c.result
    assert r["firstId"].startswith("resp_") and r["secondId"].startswith("resp_") and \
        r["firstId"] != r["secondId"], c.why("response ids")
    [sent] = r["sent"]
    assert (sent["previousResponseId"], len(sent["input"])) == (r["firstId"], 1), c.why("what the SDK sent")
    _second_turn(c)


CASES = {
    "generate_text": lambda c: _text(c, streamed=False),
    "stream_text": lambda c: _text(c, streamed=True),
    "generate_tool_round_trip": lambda c: _tools(c, streamed=False),
    "stream_tool_round_trip": lambda c: _tools(c, streamed=True),
    "generate_reasoning": _reasoning,
    "stream_reasoning": _reasoning,
    "generate_cache": _cache,
    "history_second_turn": _history_second_turn,
    "previous_response_id": _previous_response_id,
    "generate_error_429": lambda c: ai_error(c, streamed=False),
    "stream_error_429": lambda c: ai_error(c, streamed=True),
}


# ---- the items ---------------------------------------------------------------------------------

CLIENTS = {"ai-openai-responses": Client(["ai_sdk_responses.mjs"], "openai", CASES)}
runs = runs_fixture(CLIENTS)        # the module's fixture: the three node processes, run once


@pytest.mark.parametrize("client,route,case", items(CLIENTS))
def test_node_client(runs, client, route, case):
    runs.check(client, route, case)


def test_every_upstream_request_belongs_to_a_case(runs):
    runs.check_accounted_for()
